"""Isolation between users, and secrets kept out of answers and logs (issue 7, item 2).

Alice gets one of everything: memories (kept with action items and events, discarded,
deleted, from workflow, from screenpipe), messages, a plugin enabled and reviewed, webhook
deliveries (one waiting for its retry, one given up), an integration key, a speech profile,
a conversation in progress and a web session. Then bob calls every route of the app (the
app's own route table, classified in ``isolation_routes.py``) with his bearer token, his
signed-in web session and CSRF token, or his integration key, on alice's ids:

- a route naming alice's things answers 404 (``/listen`` with ``uid=alice`` closes 1008),
  never a 2xx and never a 5xx; alice reading the same URL gets her thing;
- every bearer route answers ``?uid=alice`` with a 403 and no credentials with a 401, and so
  does every integration route with bob's key;
- nothing bob gets back names alice's ids, her uid or her words, and alice's data is the same
  before and after (memories, index, messages, plugins, keys, profile, deliveries, journal,
  session);
- no token, key, session id, CSRF or webhook secret is in any answer (but the integration
  key on the page that made it, and the session id in its ``Set-Cookie``) nor in any log
  record, every logger at DEBUG.

``test_live_and_listen_on_a_real_server`` does the rest on ``omi-backend serve`` with its
log at DEBUG: ``/listen`` for alice's uid with bob's credentials closes 1008, each user's
``/live/events`` stream carries their own live lines only, ``keys create`` prints the key on
stdout alone, and the log holds none of the secrets (uvicorn logs ``/listen?token=...`` and
the handshake headers, which the server's log filter redacts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from uvicorn.logging import AccessFormatter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.journal import OpenJournal, ProcessingMemories
from app.core.models import SearchRequest, TranscriptSegment
from app.core.ports import MemoryQuery
from app.core.services import Services
from app.core.speech_profile import duration_key, profile_path
from app.core.tokens import TokenService
from app.logsafe import RedactSecrets, redact
from app.main import create_app
from app.web.live import open_segments
from app.web.security import CSRF_SECRET_KEY
from builtin_plugins.omi_webhooks import OmiWebhooks, QueuedDelivery, read_deliveries, webhook_secret
from builtin_plugins.omi_webhooks.state import (
    GIVEN_UP_PREFIX,
    QUEUE_KEY,
    DeliveryRecord,
    append_delivery,
    give_up,
)
from integrations.common import integration_keys
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.level_engine import LevelEngine, tone
from tests.fakes.plugin_server import FakePluginServer
from tests.hardening.isolation_routes import (
    ANONYMOUS,
    KEY,
    TABLE,
    TOKEN,
    WEB,
    WEB_SECOND,
    Call,
    Owned,
    Public,
    World,
    route_keys,
)
from tests.hardening.isolation_support import (
    Events,
    Exchange,
    Recorder,
    every_log,
    found,
    log_text,
    wav,
    websocket_close,
)
from tests.inloop import InLoopClient, in_loop_client
from tests.serverproc import make_token, omi_backend, server, wait_healthy
from tests.web.conftest import csrf_token, sign_in, web_services

pytestmark = pytest.mark.anyio

BASE = "http://testserver.local"
SESSION = "omi_session"
LIVE_WORDS = "Kilimanjaro sunrise at dawn"
KEPT = (
    "We should book the ferry tickets to Zanzibar tonight. I need to call the quokka sanctuary "
    "tomorrow at 3pm. Let's meet at the harbour on Friday at 10am."
)
ALICE_WORDS = ("Zanzibar", "quokka", "Kilimanjaro")
_KEY = re.compile(r"omi_ik_[A-Za-z0-9_-]{20,}")
_FINGERPRINT = re.compile(r'action="/settings/keys/([0-9a-f]{12})/revoke"')


class Clock:
    """The webhooks' clock, standing still: no retry falls due during the test."""

    def __call__(self) -> float:
        return 1_900_000_000.0


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=2)


@pytest.fixture
def plugin_server() -> Iterator[FakePluginServer]:
    fake = FakePluginServer()
    fake.mode = "fail"  # every delivery fails: alice's waits in the queue for its retry
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def settings(tmp_path: Path, plugin_server: FakePluginServer) -> Settings:
    entries = [
        {
            "id": "notes",
            "name": "Notes",
            "capabilities": ["external_integration"],
            "external_integration": {
                "triggers_on": "memory_creation",
                "webhook_url": f"{plugin_server.url}/memory",
            },
        },
        {"id": "summary", "name": "Summary", "capabilities": ["memories"], "memory_prompt": "Sum it up."},
    ]
    catalogue = tmp_path / "community-plugins.json"
    catalogue.write_text(json.dumps(entries), encoding="utf-8")
    return Settings(
        data_dir=tmp_path / "data",
        admin_key=f"admin-{secrets.token_hex(12)}-",
        plugins_catalogue=str(catalogue),
        webhook_allow_private=True,
        webhook_connect_timeout=1.0,
        webhook_read_timeout=2.0,
    )


def test_every_route_is_classified(settings: Settings, embedder: MiniLMEmbedder) -> None:
    app = create_app(settings, services=web_services(settings.data_dir, embedder))
    routes = set(route_keys(app))
    assert sorted(routes - set(TABLE)) == [], "routes missing from isolation_routes.TABLE"
    assert sorted(set(TABLE) - routes) == [], "TABLE entries for routes the app no longer has"
    assert (
        "WS /listen" in routes and "GET /live/events" in routes and "GET /memories/{memory_id:str}" in routes
    )
    world = _dummy_world()
    for key, entry in TABLE.items():
        calls = entry.calls(world)
        if isinstance(entry, Owned):  # refusals only: 404, or 1008 for /listen (never 2xx)
            statuses = {status for call in calls for status in call.expect}
            assert statuses <= {404, 1008} and statuses, (key, statuses)
        elif not calls:  # only a stream, called on the real server instead
            assert key == "GET /live/events", f"{key} is classified but never called"


def _dummy_world() -> World:
    ids = {kind: f"{kind}-id" for kind in ("kept", "discarded", "deleted")}
    return World(
        tokens={"alice": "a", "bob": "b", "bad": "x"},
        keys={"alice": "a", "bob": "b"},
        sessions={"alice": "a", "bob": "b"},
        memories=ids,
        fingerprint="0" * 12,
        webhooks={"queued": "q"},
    )


def test_the_log_filter_redacts_credentials_and_keeps_uvicorn_lines_whole() -> None:
    token, key = "omi_" + secrets.token_urlsafe(32), "omi_ik_" + secrets.token_urlsafe(32)
    access = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/listen?uid=a&token={token}&codec=opus", "1.1", 101),
        None,
    )
    header = logging.LogRecord(
        "websockets.client", logging.DEBUG, __file__, 1, "> %s: %s", ("Authorization", "Token dg-1"), None
    )
    try:
        raise ValueError(f"refused {key}")
    except ValueError:
        failed = logging.LogRecord("omi_backend", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    assert all(RedactSecrets().filter(record) for record in (access, header, failed))
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(access)
    assert (
        line
        == '127.0.0.1:5 - "GET /listen?uid=a&token=[redacted]&codec=opus HTTP/1.1" 101 Switching Protocols'
    )
    assert header.getMessage() == "> Authorization: [redacted]"
    text = logging.Formatter().format(failed)
    assert "refused omi_ik_[redacted]" in text and key not in text
    assert redact("Cookie: omi_session=abc; omi_csrf=def\nnext line") == "Cookie: [redacted]\nnext line"
    assert (
        redact("GET /v1/memories?limit=0&api_key=xyz&uid=bob")
        == "GET /v1/memories?limit=0&api_key=[redacted]&uid=bob"
    )
    assert (
        redact("omi_backend.plugins.omi_webhooks: plugin loaded")
        == "omi_backend.plugins.omi_webhooks: plugin loaded"
    )


# --- alice's world ---------------------------------------------------------------------------


class Site:
    """The app, its services and the clients of the test (every answer recorded)."""

    def __init__(self, app: Any, services: Services, recorder: Recorder) -> None:
        self.app = app
        self.services = services
        self.recorder = recorder
        self.clients: list[InLoopClient] = []
        self.csrf: dict[str, str] = {}

    def client(self) -> InLoopClient:
        client = InLoopClient(self.app, BASE)
        self.recorder.hook(client)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_memory(api: httpx.AsyncClient, token: str, text: str, start: str) -> dict[str, Any]:
    body = {
        "started_at": start,
        "finished_at": start.replace(":00:00", ":05:00"),
        "transcript_segments": [{"text": text, "speaker": "SPEAKER_0", "is_user": True}],
    }
    response = await api.post("/v1/memories", json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    memory: dict[str, Any] = response.json()["memory"]
    return memory


async def htmx_post(client: httpx.AsyncClient, csrf: str, path: str, **kwargs: Any) -> httpx.Response:
    return await client.post(path, headers={"HX-Request": "true", "X-CSRFToken": csrf}, **kwargs)


async def build_world(site: Site, plugin_server: FakePluginServer) -> tuple[World, dict[str, InLoopClient]]:
    """Alice's things, made through the routes a user would use; bob's credentials."""
    kv = site.services.kv
    plugin = site.app.state.plugins.pm.get_plugin("omi_webhooks")
    assert isinstance(plugin, OmiWebhooks)
    plugin.clock = Clock()
    plugin_server.secret = await webhook_secret(kv, "notes")
    tokens = {uid: await TokenService(kv).create(uid) for uid in ("alice", "bob")}
    tokens["bad"] = "omi_" + secrets.token_urlsafe(32)  # the shape of a token, but nobody's
    keys = {"bob": await integration_keys(kv).create("bob")}  # what `omi-backend keys create bob` does
    api = site.client()
    clients = {
        "api": api,
        "alice": site.client(),
        "bob": site.client(),
        "bob2": site.client(),
        "anonymous": site.client(),
    }
    sessions: dict[str, str] = {}
    for name in ("alice", "bob", "bob2"):
        signed = await sign_in(clients[name], tokens[name.rstrip("2")])
        assert signed.status_code == 303, signed.text
        sessions[name] = clients[name].cookies[SESSION]
        site.csrf[name] = await csrf_token(clients[name], "/settings")
    site.csrf["anonymous"] = await csrf_token(clients["anonymous"], "/login")
    alice, web = bearer(tokens["alice"]), clients["alice"]

    for route, body in (("enable", None), ("review", {"score": 5, "review": "Handy for notes."})):
        response = await api.post(
            f"/v1/plugins/{route}", params={"plugin_id": "notes"}, json=body, headers=alice
        )
        assert response.status_code == 200, response.text
    kept = await create_memory(api, tokens["alice"], KEPT, "2026-11-23T09:00:00Z")
    assert kept["structured"]["action_items"] and kept["structured"]["events"], kept["structured"]
    discarded = await create_memory(
        api,
        tokens["alice"],
        "Zanzibar budget notes: email the travel agent about the deposit.",
        "2026-11-23T08:00:00Z",
    )
    assert (
        await htmx_post(web, site.csrf["alice"], f"/memories/{discarded['id']}/discard")
    ).status_code == 200
    deleted = await create_memory(
        api, tokens["alice"], "The quokka photos are on the laptop.", "2026-11-23T07:00:00Z"
    )
    assert (await api.delete(f"/v1/memories/{deleted['id']}", headers=alice)).status_code == 204

    made = await htmx_post(web, site.csrf["alice"], "/settings/keys")
    assert made.status_code == 201, made.text
    keys["alice"] = _KEY.findall(made.text)[0]
    (fingerprint,) = _FINGERPRINT.findall(made.text)
    by_key = {"api-key": keys["alice"]}
    text = {"text": "Zanzibar packing list: sunscreen and a hat."}
    assert (
        await api.post("/v1/integrations/workflow/memories", json=text, headers=by_key)
    ).status_code == 200
    (workflow,) = (await api.get("/v1/integrations/workflow/memories", headers=by_key)).json()
    screen = {
        "request_id": "trip-notes-1",
        "source": "screen",
        "text": "Zanzibar ferry timetable",
        "timestamp_range": {"start": 1_790_000_000, "end": 1_790_000_060},
    }
    screenpipe = await api.post(
        "/v1/integrations/screenpipe", json=screen, headers={"api_key": keys["alice"]}
    )
    assert screenpipe.status_code == 200, screenpipe.text

    profile = wav(6.0)
    files = {"file": ("alice.wav", profile, "audio/wav")}
    assert (await api.post("/v3/upload-audio", files=files, headers=alice)).status_code == 200
    for uid, has in (("alice", True), ("bob", False)):  # a profile is its owner's alone
        answer = await api.get("/v3/speech-profile", headers=bearer(tokens[uid]))
        assert answer.json() == {"has_profile": has}
    asked = await api.post("/v1/messages", json={"text": "When is the Zanzibar ferry?"}, headers=alice)
    assert asked.status_code == 200 and kept["id"] in asked.json()["memories_id"], asked.text

    records = await read_deliveries(kv, "notes", "alice")
    assert records and records[-1].status == 500, records  # the first delivery failed: queued
    queued = records[-1].webhook_id
    given_up = QueuedDelivery(
        plugin_id="notes",
        uid="alice",
        url=f"{plugin_server.url}/memory?uid=alice",
        body="{}",
        attempt=7,
        due_at=0.0,
    )
    await give_up(kv, "msg_alice_given_up", given_up)
    at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    record = DeliveryRecord(
        webhook_id="msg_alice_given_up", at=at, url=given_up.url, status=None, attempt=7, error="timeout"
    )
    await append_delivery(kv, "notes", "alice", record)
    log = (await web.get("/plugins/notes/deliveries")).text
    assert f"/deliveries/{queued}/retry" in log and "/deliveries/msg_alice_given_up/retry" in log

    journals = ProcessingMemories(site.app.state.pipeline)
    journal = OpenJournal(uid="alice", processing_memory_id="pm-alice", started_at=at)
    await journals.open(journal)
    line = TranscriptSegment(text=LIVE_WORDS, speaker="SPEAKER_1", start=1.0, end=3.0)
    await journals.append(journal, [line])
    assert LIVE_WORDS in (await web.get("/live")).text

    world = World(
        tokens=tokens,
        keys=keys,
        sessions=sessions,
        memories={
            "kept": kept["id"],
            "discarded": discarded["id"],
            "deleted": deleted["id"],
            "workflow": workflow["id"],
            "screenpipe": screenpipe.json()["id"],
        },
        fingerprint=fingerprint,
        webhooks={"queued": queued, "given_up": "msg_alice_given_up"},
        profile_wav=profile,
    )
    return world, clients


async def snapshot(site: Site, world: World) -> dict[str, Any]:
    """Everything of alice's, as stored."""
    services, kv = site.services, site.services.kv
    catalogue = site.app.state.catalogue
    encode = msgspec.json.encode
    memories = {kind: encode(await services.store.get("alice", mid)) for kind, mid in world.memories.items()}
    listed = await services.store.list_json("alice", MemoryQuery(limit=1000, include_discarded=True))
    found_ids = [
        m.id for m in await site.app.state.pipeline.search("alice", SearchRequest(query="Zanzibar", limit=50))
    ]
    queue = {
        wid: raw
        for wid, raw in (await kv.hgetall(QUEUE_KEY)).items()
        if msgspec.json.decode(raw, type=QueuedDelivery).uid == "alice"
    }
    session_key = "web:sessions:" + hashlib.sha256(world.sessions["alice"].encode()).hexdigest()
    return {
        "memories": memories,
        "listed": listed,
        "search": sorted(found_ids),
        "messages": encode(await services.store.list_messages("alice", limit=1000, offset=0)),
        "enabled": await catalogue.enabled_ids("alice"),
        "reviews": {pid: encode((await catalogue.reviews(pid)).get("alice")) for pid in ("notes", "summary")},
        "keys": await integration_keys(kv).digests("alice"),
        "tokens": await TokenService(kv).digests("alice"),
        "profile": (await kv.get(duration_key("alice")), await services.blobs.get(profile_path("alice"))),
        "deliveries": encode(await read_deliveries(kv, "notes", "alice", limit=100)),
        "queue": queue,
        "given_up": await kv.get(GIVEN_UP_PREFIX + "msg_alice_given_up"),
        "journal": encode(await open_segments(site.app.state.pipeline, "alice")),
        "session": await kv.get(session_key),
    }


# --- bob's calls -----------------------------------------------------------------------------


async def send(
    site: Site, clients: dict[str, InLoopClient], world: World, who: str, credential: str, call: Call
) -> httpx.Response:
    """``call`` as ``who`` (bob, or alice for the owner's check) with the credential named."""
    headers = dict(call.headers)
    client = clients["api"]
    data = dict(call.form) if call.form is not None else None
    if credential == TOKEN:
        headers.update(bearer(world.tokens[who]))
    elif credential == KEY:
        headers["api-key"] = world.keys[who]
    elif credential in (WEB, WEB_SECOND, ANONYMOUS):
        name = {WEB: who, WEB_SECOND: "bob2", ANONYMOUS: "anonymous"}[credential]
        client = clients[name]
        if call.method != "GET" and call.method != "HEAD":
            if call.htmx:
                headers.update({"HX-Request": "true", "X-CSRFToken": site.csrf[name]})
            else:
                data = {**(data or {}), "_csrf_token": site.csrf[name]}
        elif call.htmx:
            headers["HX-Request"] = "true"
    return await client.request(
        call.method, call.url, json=call.json, data=data, files=call.files, headers=headers
    )


def _with_query(url: str, extra: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def _alice_things(world: World) -> dict[str, str]:
    things = {f"memory {kind}": mid for kind, mid in world.memories.items()}
    things.update({f"webhook {kind}": wid for kind, wid in world.webhooks.items()})
    things.update({"key fingerprint": world.fingerprint, "uid": "alice", "session pm": "pm-alice"})
    things.update({f"word {word}": word for word in ALICE_WORDS})
    return things


async def run_matrix(site: Site, clients: dict[str, InLoopClient], world: World) -> list[str]:
    """Bob's calls of every route; the problems found."""
    problems: list[str] = []
    handlers = route_keys(site.app)
    things = _alice_things(world)
    for key, handler in handlers.items():
        entry = TABLE[key]
        credential = ANONYMOUS if isinstance(entry, Public) else entry.credential
        calls = entry.calls(world)
        for call in calls:
            if call.method == "WS":
                code, reason = await websocket_close(site.app, call.url, call.headers)
                if code not in call.expect:
                    problems.append(f"{key} {call.url}: closed {code} {reason!r}, expected {call.expect}")
                continue
            path = httpx.URL(call.url).path
            routed = site.app.asgi_router.handle_routing(path=path, method=call.method)[1]
            if routed is not handler:
                problems.append(f"{key}: {call.method} {call.url} is routed to {routed}, not to this route")
            response = await send(site, clients, world, "bob", credential, call)
            if response.status_code not in call.expect or response.status_code >= 500:
                got = f"{response.status_code}: {response.text[:200]}"
                problems.append(f"{key} {call.url} (htmx={call.htmx}): {got}, expected {call.expect}")
            asked = call.url + json.dumps(call.json) + json.dumps(call.form)
            leaked = found(
                response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items()),
                {n: t for n, t in things.items() if t not in asked},
            )
            if leaked:
                problems.append(f"{key} {call.url}: bob's answer names alice's {leaked}")
            if call.owner_sees:
                mine = await send(site, clients, world, "alice", credential, call)
                if not 200 <= mine.status_code < 300:
                    problems.append(f"{key} {call.url}: alice herself gets {mine.status_code}")
        if credential in (TOKEN, KEY) and calls and calls[0].method != "WS":
            first = calls[0]
            claimed = Call(
                first.method, _with_query(first.url, "uid=alice"), (403,), json=first.json, files=first.files
            )
            bare = Call(first.method, first.url, (401,), json=first.json, files=first.files)
            for variant, who in ((claimed, "bob"), (bare, "nobody")):
                if who == "nobody":
                    response = await clients["api"].request(
                        variant.method, variant.url, json=variant.json, files=variant.files
                    )
                else:
                    response = await send(site, clients, world, who, credential, variant)
                if response.status_code not in variant.expect:
                    problems.append(
                        f"{key} {variant.url} as {who}: {response.status_code}, expected {variant.expect}"
                    )
    return problems


async def hygiene_probes(site: Site, clients: dict[str, InLoopClient], world: World) -> list[str]:
    """Failed authentication of each kind, and a query string holding a token: the answers
    must not repeat the credential."""
    api, bad, bob = clients["api"], world.tokens["bad"], bearer(world.tokens["bob"])
    admin = site.app.state.settings.admin_key
    token = world.tokens["bob"]
    answers = [
        (await api.get("/v1/memories", headers=bearer(bad)), 401),
        (await api.get("/v1/memories", headers={"Authorization": f"Bearer {admin}not a uid!"}), 401),
        (await api.get("/v1/memories", headers={"Authorization": f"Basic {bad}"}), 401),
        (await api.get("/v1/integrations/workflow/memories", headers={"api-key": "omi_ik_" + bad[4:]}), 401),
        (await api.get(f"/v1/memories?limit=0&token={token}", headers=bob), 400),
        (await clients["bob"].get(f"/?page=0&token={token}"), 400),
        (await clients["anonymous"].get(f"/live/events?token={token}"), 303),  # sent to sign in
    ]
    problems = [
        f"{r.request.url}: {r.status_code}, not {status}" for r, status in answers if r.status_code != status
    ]
    code, reason = await websocket_close(site.app, f"token={bad}&sample_rate=abc", {})
    if code != 1008 or bad in reason:
        problems.append(f"/listen with a bad token: {code} {reason!r}")
    return problems


def secret_problems(
    exchanges: list[Exchange], needles: dict[str, str], sessions: set[str], keys: set[str]
) -> list[str]:
    """Where a secret shows in an answer: session ids may only be in ``Set-Cookie``, each
    integration key in the one answer that made it, the rest nowhere."""
    problems: list[str] = []
    shown: dict[str, int] = {}
    for exchange in exchanges:
        where = f"{exchange.method} {exchange.url} -> {exchange.status}"
        full = exchange.body + "\n" + exchange.header_text()
        without_cookies = exchange.body + "\n" + exchange.header_text(without=("set-cookie",))
        for name, value in needles.items():
            text = without_cookies if name in sessions else full
            if value in text:
                if (
                    name in keys
                    and exchange.method == "POST"
                    and exchange.url.endswith("/settings/keys")
                    and exchange.status == 201
                ):
                    shown[name] = shown.get(name, 0) + 1
                    continue
                problems.append(f"{name} in the answer to {where}")
    problems += [f"{name} shown {count} times" for name, count in shown.items() if count != 1]
    return problems


async def test_bob_reaches_nothing_of_the_other_user(
    settings: Settings,
    embedder: MiniLMEmbedder,
    plugin_server: FakePluginServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    services = web_services(settings.data_dir, embedder)  # its speech-to-text refuses to open
    app = create_app(settings, services=services)
    recorder = Recorder()
    async with in_loop_client(app, BASE), AsyncExitStack() as stack:
        site = Site(app, services, recorder)
        stack.push_async_callback(site.close)
        with every_log(caplog):
            world, clients = await build_world(site, plugin_server)
            before = await snapshot(site, world)
            problems = await run_matrix(site, clients, world)
            problems += await hygiene_probes(site, clients, world)
            after = await snapshot(site, world)
        assert problems == []
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}

        # alice still has everything, through her own credentials
        assert (
            await clients["api"].get(
                f"/v1/memories/{world.memories['kept']}", headers=bearer(world.tokens["alice"])
            )
        ).status_code == 200
        page = await clients["alice"].get("/")
        assert page.status_code == 200 and "Ferry Tickets to Zanzibar" in page.text
        assert (
            await clients["api"].get(
                "/v1/integrations/workflow/memories", headers={"api-key": world.keys["alice"]}
            )
        ).status_code == 200
        # bob's second session is signed out, his first one is not
        assert (await clients["bob2"].get("/settings")).status_code == 303
        assert (await clients["bob"].get("/settings")).status_code == 200
        stored = await services.kv.get(CSRF_SECRET_KEY)
        assert stored is not None
        csrf_secret = msgspec.json.decode(stored, type=str)

    new_keys = {
        f"bob's web key {i}": k
        for i, k in enumerate(_KEY.findall("\n".join(e.body for e in recorder.exchanges)))
        if k != world.keys["alice"]
    }
    assert new_keys, "bob's POST /settings/keys showed no key"
    needles = {
        "alice's token": world.tokens["alice"],
        "bob's token": world.tokens["bob"],
        "the bad token": world.tokens["bad"],
        "alice's key": world.keys["alice"],
        "bob's key": world.keys["bob"],
        **new_keys,
        "alice's session": world.sessions["alice"],
        "bob's session": world.sessions["bob"],
        "bob's second session": world.sessions["bob2"],
        "the CSRF secret": csrf_secret,
        "the webhook secret": plugin_server.secret,
        "the admin key": str(settings.admin_key),
    }
    sessions = {"alice's session", "bob's session", "bob's second session"}
    keys = {"alice's key", *new_keys}
    assert secret_problems(recorder.exchanges, needles, sessions, keys) == []
    # The test's own client logs each URL it asks for (the probes' ?token= included): not the server's.
    logs = log_text(caplog, skip=lambda r: r.name == "httpx" and BASE in r.getMessage())
    assert any(r.name.startswith("omi_backend") for r in caplog.records), "the app's logs were not captured"
    assert found(logs, needles) == []


# --- the real server --------------------------------------------------------------------------


async def sign_in_over_http(client: httpx.AsyncClient, token: str) -> tuple[str, str]:
    """Sign in through the form; the session id and the page's CSRF token."""
    response = await sign_in(client, token)
    assert response.status_code == 303, response.text[:300]
    return client.cookies[SESSION], await csrf_token(client, "/settings")


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Open ``url``; the close code and reason the server ends it with."""
    async with connect(url, additional_headers=headers or {}) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(30):
                await ws.recv()
    rcvd = closed.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason


async def live_session(address: str, token: str, level: int) -> list[str]:
    """A ``/listen`` session with the token in the query string, as a browser sends it: one
    second of audio at ``level`` then silence; the words it sent back."""
    url = f"ws://{address}/listen?codec=pcm16&sample_rate=16000&language=en&token={token}"
    words: list[str] = []
    async with connect(url) as ws:
        await ws.send(tone(level, level, 0, 0))
        async with asyncio.timeout(30):
            while not words:
                message = json.loads(await ws.recv())
                if isinstance(message, list):
                    words += [segment["text"] for segment in message]
    return words


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(LevelEngine(), api_key="dg-" + secrets.token_hex(16)) as fake:
        yield fake


async def test_live_and_listen_on_a_real_server(tmp_path: Path, deepgram: FakeDeepgram) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    tokens = {uid: await make_token(data_dir, uid) for uid in ("alice", "bob")}
    bad = "omi_" + secrets.token_urlsafe(32)
    created = await anyio.run_process(
        [*omi_backend(), "keys", "create", "alice"], env={**os.environ, "OMI_DATA_DIR": str(data_dir)}
    )
    key = created.stdout.decode().strip()
    assert _KEY.fullmatch(key) and key not in created.stderr.decode()  # the secret on stdout, alone
    web_secret = secrets.token_hex(32)
    env = {
        "OMI_LOG_LEVEL": "debug",
        "OMI_STT": "deepgram",
        "DEEPGRAM_API_KEY": deepgram.api_key,
        "OMI_DEEPGRAM_URL": deepgram.url,
        "ADMIN_KEY": f"admin-{secrets.token_hex(12)}-",
        "OMI_WEB_SECRET": web_secret,
    }
    needles = {
        "alice's token": tokens["alice"],
        "bob's token": tokens["bob"],
        "the bad token": bad,
        "alice's key": key,
        "the Deepgram key": deepgram.api_key,
        "the admin key": env["ADMIN_KEY"],
        "the CSRF secret": web_secret,
    }
    with server(data_dir, log, env) as (proc, address):
        await wait_healthy(address, proc, log)
        base = f"http://{address}"
        timeout = httpx.Timeout(60.0)
        async with (
            httpx.AsyncClient(base_url=base, timeout=timeout) as alice,
            httpx.AsyncClient(base_url=base, timeout=timeout) as bob,
        ):
            needles["alice's session"], needles["alice's CSRF token"] = await sign_in_over_http(
                alice, tokens["alice"]
            )
            needles["bob's session"], needles["bob's CSRF token"] = await sign_in_over_http(
                bob, tokens["bob"]
            )
            failed = await bob.get("/v1/memories", headers=bearer(bad))
            assert failed.status_code == 401 and found(failed.text + str(failed.headers), needles) == []
            async with alice.stream("GET", "/live/events") as a, bob.stream("GET", "/live/events") as b:
                alice_events, bob_events = Events(a), Events(b)
                assert (await alice_events.next())[0] == "ready" and (await bob_events.next())[0] == "ready"

                listen = f"ws://{address}/listen?codec=pcm16&sample_rate=16000&language=en&uid=alice"
                for url, headers in (
                    (listen, bearer(tokens["bob"])),
                    (f"{listen}&token={tokens['bob']}", None),
                    (f"{listen}&token={bad}", None),
                    (listen, {"Cookie": f"{SESSION}={bob.cookies[SESSION]}"}),
                ):
                    code, reason = await refused(url, headers)
                    assert code == 1008 and found(reason, needles) == [], (url, code, reason)

                assert "w7" in " ".join(await live_session(address, tokens["alice"], 7))
                event, html = await alice_events.next()
                assert event == "segments" and "w7" in html
                assert "w9" in " ".join(await live_session(address, tokens["bob"], 9))
                event, html = await bob_events.next()  # bob's first lines are his own, not alice's
                assert event == "segments" and "w9" in html and "w7" not in html
                assert "w5" in " ".join(await live_session(address, tokens["alice"], 5))
                event, html = await alice_events.next()
                assert event == "segments" and "w5" in html and "w9" not in html
            # the sessions end (their last results from Deepgram) before the server is stopped,
            # which blocks this loop, the fake Deepgram's
            for _ in range(600):
                if all(c.close_code is not None for c in deepgram.connections):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("a Deepgram connection stayed open")
    text = log.read_text()
    assert found(text, needles) == [], "secrets in the server's log"
    assert "/listen?" in text and "token=[redacted]" in text  # uvicorn's WebSocket lines, redacted
    assert "Authorization: [redacted]" in text  # the handshake headers at DEBUG, redacted

"""The omi_webhooks plugin end to end: POST /v1/memories -> a fake Omi plugin server.

The tests that run an app through ``running`` do so on the embedded adapters and on the
production ones (the ``backends`` fixture): the queue, the breaker and the delivery log in Redis.

The catalogue is a stand-in with ``entry``/``omi_entries`` (the real one is written
alongside); enabled state is the catalogue's KeyValue key ``users:{uid}:enabled_plugins``.
Time for the retry schedule and the breaker is a fake clock moved by the tests.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.models import TranscriptSegment
from app.core.ports import KeyValue
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import create_app
from app.plugins import TranscriptSession
from builtin_plugins.omi_webhooks import (
    QUEUE_KEY,
    SCHEDULE,
    CircuitBreaker,
    OmiWebhooks,
    QueuedDelivery,
    read_deliveries,
    webhook_secret,
)
from tests.api.conftest import Backends, embedded_services
from tests.api.test_memories import body
from tests.fakes.plugin_server import FakePluginServer
from tests.inloop import in_loop_client

pytestmark = pytest.mark.anyio

PLUGIN = "notes"


class Clock:
    """A settable unix clock."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StubCatalogue:
    """The catalogue's interface as omi_webhooks uses it: ``entry`` and ``omi_entries``."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    def entry(self, plugin_id: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["id"] == plugin_id), None)

    def omi_entries(self) -> list[dict[str, Any]]:
        return list(self.entries)


def omi_entry(plugin_id: str, webhook_url: str, triggers_on: str = "memory_creation") -> dict[str, Any]:
    """An entry in the shape of Omi's community-plugins.json."""
    return {
        "id": plugin_id,
        "name": "Notes",
        "author": "Ada",
        "description": "Keeps notes of conversations.",
        "image": "/plugins/logos/notes.png",
        "capabilities": ["external_integration"],
        "memory_prompt": None,
        "chat_prompt": None,
        "external_integration": {
            "triggers_on": triggers_on,
            "webhook_url": webhook_url,
            "setup_completed_url": None,
            "setup_instructions_file_path": "https://example.org/notes/setup.md",
        },
        "deleted": False,
    }


def enabled_check(kv: KeyValue) -> Callable[[str, str], Any]:
    async def is_enabled(plugin_id: str, uid: str) -> bool:
        raw = await kv.get(f"users:{uid}:enabled_plugins")
        return raw is not None and plugin_id in msgspec.json.decode(raw, type=list[str])

    return is_enabled


async def enable(kv: KeyValue, uid: str, *plugin_ids: str) -> None:
    await kv.set(f"users:{uid}:enabled_plugins", msgspec.json.encode(list(plugin_ids)).decode())


async def eventually(
    get: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], seconds: float = 5.0
) -> Any:
    """``await get()`` until ``ok(result)`` (an HTTP response is read as JSON), for ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = await get()
        if hasattr(result, "json"):
            result = result.json()
        if ok(result) or time.monotonic() > deadline:
            return result
        await anyio.sleep(0.02)


@dataclass
class Harness:
    app: Litestar
    client: httpx.AsyncClient  # an in-loop client, or an AsyncTestClient
    services: Services
    plugin: OmiWebhooks
    server: FakePluginServer
    clock: Clock
    alice: dict[str, str]
    bob: dict[str, str]

    async def create(self, name: str = "standup", headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.client.post("/v1/memories", json=body(name), headers=headers or self.alice)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def in_app(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await function(*args)`` on the app's event loop: the test client's portal, or
        this loop for an in-loop client."""
        portal = getattr(self.client, "blocking_portal", None)
        if portal is None:
            return await function(*args)
        return await anyio.to_thread.run_sync(portal.call, function, *args)

    async def process_due(self) -> None:
        await self.in_app(self.plugin.process_due)

    async def queue(self) -> dict[str, QueuedDelivery]:
        raw = await self.services.kv.hgetall(QUEUE_KEY)
        return {k: msgspec.json.decode(v, type=QueuedDelivery) for k, v in raw.items()}


@pytest.fixture
def server() -> Iterator[FakePluginServer]:
    fake = FakePluginServer()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def webhook_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        webhook_allow_private=True,
        webhook_connect_timeout=1.0,
        webhook_read_timeout=1.0,
        plugin_timeout=5.0,
    )


@asynccontextmanager
async def running(
    settings: Settings,
    backends: Backends,
    server: FakePluginServer,
    clock: Clock,
    entries: list[dict[str, Any]] | None = None,
    breaker: CircuitBreaker | None = None,
) -> AsyncIterator[Harness]:
    """An app with omi_webhooks pointed at ``server`` through the stand-in catalogue."""
    settings, services = backends(settings)
    app = create_app(settings, services=services)
    plugin = app.state.plugins.pm.get_plugin("omi_webhooks")
    assert isinstance(plugin, OmiWebhooks)
    plugin.clock = clock
    plugin.catalogue = StubCatalogue(entries or [omi_entry(PLUGIN, f"{server.url}/memory?key=1")])
    plugin.is_enabled = enabled_check(services.kv)
    plugin.poll_interval = 3600.0  # the tests drive the queue with process_due
    if breaker is not None:
        plugin.breaker = breaker
    async with in_loop_client(app) as client:
        tokens = TokenService(services.kv)
        alice = {"Authorization": f"Bearer {await tokens.create('alice')}"}
        bob = {"Authorization": f"Bearer {await tokens.create('bob')}"}
        server.secret = await webhook_secret(services.kv, PLUGIN)
        await enable(services.kv, "alice", PLUGIN)
        yield Harness(app, client, services, plugin, server, clock, alice, bob)


@pytest.fixture
async def harness(
    webhook_settings: Settings, backends: Backends, server: FakePluginServer
) -> AsyncIterator[Harness]:
    async with running(webhook_settings, backends, server, Clock()) as h:
        yield h


async def test_memory_created_is_delivered_signed_and_its_reply_becomes_a_message(harness: Harness) -> None:
    result = await harness.create("grocery")  # "tomorrow": an event on every LanguageModel
    memory = result["memory"]
    [received] = harness.server.requests("/memory")
    assert received.signature_ok and received.error is None, received.error
    assert received.query == {"key": ["1"], "uid": ["alice"]}  # &uid= after an existing query
    assert received.webhook_id.startswith("msg_")
    assert abs(int(received.timestamp) - time.time()) < 60
    assert received.json == memory  # the Memory JSON, every datetime ISO (nested events too)
    parsed = received.payload
    assert parsed.structured.category == memory["structured"]["category"]
    assert [s.speaker_id for s in parsed.transcript_segments] == [
        s["speaker_id"] for s in memory["transcript_segments"]
    ]
    assert parsed.discarded is False and isinstance(parsed.plugins_results, list)
    assert memory["structured"]["events"], "the corpus conversation has an event to serialise"

    [message] = result["messages"]
    assert message["text"] == harness.server.message
    assert message["plugin_id"] == PLUGIN and message["from_external_integration"] is True
    assert message["memories_id"] == [memory["id"]]
    stored = (await harness.client.get("/v1/messages", headers=harness.alice)).json()
    assert [m["id"] for m in stored] == [message["id"]]

    assert await harness.queue() == {}
    [record] = await read_deliveries(harness.services.kv, PLUGIN, "alice")
    assert (record.webhook_id, record.status, record.attempt, record.error) == (
        received.webhook_id,
        200,
        1,
        None,
    )
    assert record.url.endswith("/memory?key=1&uid=alice")


async def test_short_replies_are_not_messages(harness: Harness) -> None:
    harness.server.message = "ok"
    result = await harness.create()
    assert result["messages"] == []
    assert len(harness.server.requests()) == 1


async def test_discarded_memories_and_users_who_did_not_enable_it_are_never_sent(harness: Harness) -> None:
    discarded = await harness.create("short")
    assert discarded["memory"]["discarded"] is True
    await harness.create("standup", headers=harness.bob)
    harness.clock.advance(36 * 3600)
    await harness.process_due()
    assert harness.server.requests() == []
    assert await harness.queue() == {}


async def test_a_failing_server_gets_the_same_delivery_on_schedule_until_it_is_back(harness: Harness) -> None:
    """The plugin server is down for an hour of simulated time; the memory arrives once."""
    harness.server.mode = "fail"
    start = harness.clock.now
    result = await harness.create()
    assert result["messages"] == []
    [(webhook_id, queued)] = (await harness.queue()).items()
    assert (queued.attempt, queued.due_at) == (1, start + 5)

    attempt_times = [0.0]
    seen = 1
    for _ in range(24 * 6):  # a day in steps of ten seconds, then of ten minutes
        step = 10.0 if harness.clock.now - start < 600 else 600.0
        harness.clock.advance(step)
        if harness.clock.now - start >= 3600:
            harness.server.mode = "ok"
        await harness.process_due()
        if len(harness.server.requests()) > seen:
            seen = len(harness.server.requests())
            attempt_times.append(harness.clock.now - start)

    received = harness.server.requests()
    assert {r.webhook_id for r in received} == {webhook_id}  # one id across every retry
    assert len({r.raw for r in received}) == 1  # the same bytes every time
    assert [r.status for r in received] == [500, 500, 500, 500, 200]
    assert harness.server.accepted() == {webhook_id: 1}
    # 0 s, 5 s, 5 min, 30 min, 2 h after each failure (to the step of the loop above)
    gaps = [b - a for a, b in itertools.pairwise(attempt_times)]
    for gap, expected in zip(gaps, SCHEDULE[1:], strict=False):
        assert expected <= gap < expected + 600
    assert await harness.queue() == {}
    log = await read_deliveries(harness.services.kv, PLUGIN, "alice")
    assert [r.attempt for r in log] == [5, 4, 3, 2, 1]
    assert [r.status for r in log] == [200, 500, 500, 500, 500]
    # The reply of the successful retry is stored as a message.
    [message] = (await harness.client.get("/v1/messages", headers=harness.alice)).json()
    assert message["plugin_id"] == PLUGIN and message["memories_id"] == [result["memory"]["id"]]


async def test_a_delivery_is_given_up_after_the_last_attempt(harness: Harness) -> None:
    harness.server.mode = "fail"
    await harness.create()
    for delay in SCHEDULE[1:]:
        harness.clock.advance(delay)
        await harness.process_due()
    assert len(harness.server.requests()) == len(SCHEDULE)
    assert await harness.queue() == {}
    harness.clock.advance(48 * 3600)
    await harness.process_due()
    assert len(harness.server.requests()) == len(SCHEDULE)


async def test_a_restart_loses_no_queued_delivery(
    webhook_settings: Settings, backends: Backends, server: FakePluginServer
) -> None:
    clock = Clock()
    server.mode = "fail"
    async with running(webhook_settings, backends, server, clock) as first:
        await first.create()
        [(webhook_id, _)] = (await first.queue()).items()
    clock.advance(3600)
    server.mode = "ok"
    async with running(webhook_settings, backends, server, clock) as second:
        # the retry task's first pass at start-up sends what is due; process_due waits for it
        await second.process_due()
        assert await second.queue() == {}
    assert [r.webhook_id for r in server.requests()] == [webhook_id, webhook_id]
    assert server.accepted() == {webhook_id: 1}
    assert server.requests()[0].raw == server.requests()[1].raw


async def test_gone_disables_the_plugin_for_that_user(harness: Harness) -> None:
    harness.server.mode = "gone"
    await harness.create()
    assert [r.status for r in harness.server.requests()] == [410]
    assert await harness.services.kv.get("users:alice:enabled_plugins") == "[]"
    assert await harness.queue() == {}  # never retried
    harness.server.mode = "ok"
    await harness.create()
    assert len(harness.server.requests()) == 1


async def test_the_breaker_opens_after_consecutive_failures_and_half_opens(
    webhook_settings: Settings, backends: Backends, server: FakePluginServer
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock, threshold=2, cooldown=60.0)
    async with running(webhook_settings, backends, server, clock, breaker=breaker) as h:
        server.mode = "fail"
        await h.create()
        await h.create()
        target = server.url.removeprefix("http://")
        assert breaker.state(target) == "open"
        await h.create()  # queued, not attempted
        assert len(server.requests()) == 2
        assert len(await h.queue()) == 3

        clock.advance(61)
        assert breaker.state(target) == "half-open"
        server.mode = "ok"
        await h.process_due()
        assert len(server.requests()) == 3  # one probe; the others wait for its outcome
        assert breaker.state(target) == "closed"
        clock.advance(2)
        await h.process_due()
        assert len(server.requests()) == 5
        assert sorted(server.accepted().values()) == [1, 1, 1]
        assert await h.queue() == {}


async def test_a_failed_probe_opens_the_breaker_again(
    webhook_settings: Settings, backends: Backends, server: FakePluginServer
) -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock, threshold=1, cooldown=60.0)
    async with running(webhook_settings, backends, server, clock, breaker=breaker) as h:
        server.mode = "fail"
        await h.create()
        target = server.url.removeprefix("http://")
        assert breaker.state(target) == "open"
        clock.advance(61)
        await h.process_due()
        assert len(server.requests()) == 2 and breaker.state(target) == "open"
        clock.advance(30)
        await h.process_due()
        assert len(server.requests()) == 2


async def test_a_slow_plugin_server_does_not_delay_the_response_beyond_the_read_timeout(
    harness: Harness,
) -> None:
    harness.server.mode = "slow"
    harness.server.delay = 6.0
    started = time.monotonic()
    result = await harness.create()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 1.5, elapsed  # read timeout 1 s, plus the pipeline itself
    assert result["messages"] == []
    # The attempt itself may end just after the response: its outcome is recorded then.
    [record] = await eventually(lambda: read_deliveries(harness.services.kv, PLUGIN, "alice"), bool)
    assert record.status is None and record.error is not None and record.error.startswith("timeout")
    [(_, queued)] = (await harness.queue()).items()
    assert (queued.attempt, queued.due_at) == (1, harness.clock.now + SCHEDULE[1])


async def test_private_urls_are_refused_without_the_setting(
    tmp_path: Path, backends: Backends, server: FakePluginServer
) -> None:
    settings = Settings(data_dir=tmp_path / "data", webhook_connect_timeout=1.0, webhook_read_timeout=1.0)
    async with running(settings, backends, server, Clock()) as h:
        result = await h.create()
        assert result["messages"] == []
        assert server.requests() == []
        assert await h.queue() == {}
        [record] = await read_deliveries(h.services.kv, PLUGIN, "alice")
        assert record.status is None and record.error is not None
        assert record.error.startswith("refused:") and "127.0.0.1" in record.error


async def test_an_unreachable_server_is_logged_and_queued(
    webhook_settings: Settings, backends: Backends, server: FakePluginServer
) -> None:
    entries = [omi_entry(PLUGIN, "http://127.0.0.1:9/memory")]  # discard port: nothing listens
    async with running(webhook_settings, backends, server, Clock(), entries=entries) as h:
        await h.create()
        [(_, queued)] = (await h.queue()).items()
        assert queued.attempt == 1
        [record] = await read_deliveries(h.services.kv, PLUGIN, "alice")
        assert record.status is None and record.error


async def test_transcripts_are_delivered_and_replies_stored(
    webhook_settings: Settings, backends: Backends, server: FakePluginServer
) -> None:
    entries = [omi_entry(PLUGIN, f"{server.url}/realtime", "transcript_processed")]
    async with running(webhook_settings, backends, server, Clock(), entries=entries) as h:
        segments = [
            TranscriptSegment(text="Let's ship on Friday.", speaker="SPEAKER_1", start=0.5, end=2.0),
            TranscriptSegment(text="Agreed.", speaker="SPEAKER_0", is_user=True, start=2.1, end=2.6),
        ]
        host = h.app.state.plugins
        await h.in_app(host.on_transcript, TranscriptSession(id="session-1", uid="alice"), segments)
        await h.in_app(host.on_transcript, TranscriptSession(id="session-2", uid="bob"), segments)
        [received] = await server.wait_for(1, "/realtime")
        assert received.signature_ok and received.error is None and received.uid == "alice"
        assert received.payload.session_id == "session-1"
        assert [s.speaker_id for s in received.payload.segments] == [1, 0]
        assert received.json["segments"][0] == msgspec.to_builtins(segments[0])
        messages = await eventually(lambda: h.client.get("/v1/messages", headers=h.alice), bool)
        [message] = messages
        assert message["plugin_id"] == PLUGIN and message["from_external_integration"] is True
        assert message["memories_id"] == []
        assert len(server.requests()) == 1  # bob did not enable it
        assert await h.queue() == {}  # transcripts are not retried


async def test_with_the_real_catalogue_users_enable_it_and_a_410_disables_it(
    tmp_path: Path, embedder: MiniLMEmbedder, server: FakePluginServer
) -> None:
    listing = tmp_path / "community-plugins.json"
    listing.write_text(json.dumps([omi_entry(PLUGIN, f"{server.url}/memory")]))
    settings = Settings(
        data_dir=tmp_path / "data",
        plugins_catalogue=str(listing),
        webhook_allow_private=True,
        webhook_connect_timeout=1.0,
        webhook_read_timeout=1.0,
    )
    services = embedded_services(settings.data_dir, embedder)
    async with AsyncTestClient(app=create_app(settings, services=services)) as client:
        tokens = TokenService(services.kv)
        alice = {"Authorization": f"Bearer {await tokens.create('alice')}"}
        bob = {"Authorization": f"Bearer {await tokens.create('bob')}"}
        server.secret = await webhook_secret(services.kv, PLUGIN)
        enabled = await client.post(f"/v1/plugins/enable?plugin_id={PLUGIN}", headers=alice)
        assert enabled.status_code == 200, enabled.text

        for headers in (alice, bob):
            response = await client.post("/v1/memories", json=body("standup"), headers=headers)
            assert response.status_code == 200, response.text
        [received] = server.requests()
        assert received.uid == "alice" and received.signature_ok

        server.mode = "gone"
        response = await client.post("/v1/memories", json=body("standup"), headers=alice)
        assert response.status_code == 200
        assert [r.status for r in server.requests()] == [200, 410]
        plugins = (await client.get("/v1/plugins", headers=alice)).json()
        assert [p["enabled"] for p in plugins if p["id"] == PLUGIN] == [False]


async def test_a_delivery_claimed_by_another_process_is_left_to_it(harness: Harness) -> None:
    harness.server.mode = "fail"
    await harness.create()
    [webhook_id] = await harness.queue()
    harness.server.mode = "ok"
    await harness.services.kv.set(f"webhooks:claim:{webhook_id}", "1", ttl=60)
    harness.clock.advance(10)
    await harness.process_due()
    assert len(harness.server.requests()) == 1
    await harness.services.kv.delete(f"webhooks:claim:{webhook_id}")
    await harness.process_due()
    assert harness.server.accepted() == {webhook_id: 1}
    assert await harness.services.kv.keys("webhooks:claim:") == []

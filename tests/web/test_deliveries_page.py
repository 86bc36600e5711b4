"""``/plugins/{id}/deliveries``: a webhook entry's delivery log, added by the omi_webhooks plugin."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from app.config import Settings
from builtin_plugins.omi_webhooks import OmiWebhooks, QueuedDelivery, read_deliveries, webhook_secret
from builtin_plugins.omi_webhooks.state import (
    GIVEN_UP_PREFIX,
    QUEUE_KEY,
    DeliveryRecord,
    append_delivery,
    give_up,
)
from tests.fakes.plugin_server import FakePluginServer
from tests.web.conftest import HTMX, Site, csrf_token, memory, post_form, sign_in

pytestmark = pytest.mark.anyio

_RETRY = re.compile(r'action="/plugins/notes/deliveries/([^/"]+)/retry"')
BODY = {
    "started_at": "2026-11-23T09:00:00Z",
    "finished_at": "2026-11-23T09:05:00Z",
    "transcript_segments": [
        {
            "text": "We should book the train tickets to Lyon tonight, and pack on Friday.",
            "speaker": "SPEAKER_0",
        }
    ],
}


class Clock:
    """A unix clock that stands still: nothing in the queue falls due by itself."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[FakePluginServer]:
    fake = FakePluginServer()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def settings(tmp_path: Path, server: FakePluginServer) -> Settings:
    entries = [
        {
            "id": "notes",
            "name": "Notes <i>& co</i>",
            "capabilities": ["external_integration"],
            "external_integration": {"triggers_on": "memory_creation", "webhook_url": f"{server.url}/memory"},
        },
        {"id": "summary", "name": "Summary", "capabilities": ["memories"], "memory_prompt": "Sum it up."},
    ]
    path = tmp_path / "community-plugins.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return Settings(
        data_dir=tmp_path / "data",
        plugins_catalogue=str(path),
        webhook_allow_private=True,
        webhook_connect_timeout=1.0,
        webhook_read_timeout=2.0,
    )


@pytest.fixture
async def hooked(web: Site, server: FakePluginServer) -> OmiWebhooks:
    """The app's omi_webhooks plugin on a clock that stands still, alice with ``notes`` enabled."""
    plugin = web.app.state.plugins.pm.get_plugin("omi_webhooks")
    assert isinstance(plugin, OmiWebhooks)
    plugin.clock = Clock()
    server.secret = await webhook_secret(web.services.kv, "notes")
    enabled = await web.client.post(
        "/v1/plugins/enable", params={"plugin_id": "notes"}, headers=web.api("alice")
    )
    assert enabled.status_code == 200
    return plugin


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Wait until ``check()`` holds (the retry runs on the app's own task)."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await anyio.sleep(0.05)


async def failed_delivery(web: Site, server: FakePluginServer) -> str:
    """A memory whose delivery failed once and waits in the queue; its webhook id."""
    server.mode = "fail"
    created = await web.client.post("/v1/memories", json=BODY, headers=web.api("alice"))
    assert created.status_code == 200, created.text
    records = await read_deliveries(web.services.kv, "notes", "alice")
    assert [(r.status, r.attempt) for r in records] == [(500, 1)]
    return records[0].webhook_id


async def test_the_log_shows_the_users_deliveries_and_a_retry_button(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    webhook_id = await failed_delivery(web, server)
    response = await web.client.get("/plugins/notes/deliveries")
    assert response.status_code == 200
    html = response.text
    assert "<title>Deliveries of Notes &lt;i&gt;&amp; co&lt;/i&gt; · omi</title>" in html
    assert 'aria-current="page">Plugins' in html and "memory created" in html
    assert "<td>500</td>" in html and "<td>1</td>" in html and " ms</td>" in html
    assert '<td class="error-text">HTTP 500</td>' in html
    assert _RETRY.findall(html) == [webhook_id]
    secret = await webhook_secret(web.services.kv, "notes")
    assert secret not in html and "whsec_" not in html  # never the secret
    fragment = (await web.client.get("/plugins/notes/deliveries", headers=HTMX)).text
    assert fragment.lstrip().startswith('<section id="deliveries">') and "<html" not in fragment
    cards = (await web.client.get("/plugins")).text
    assert 'href="/plugins/notes/deliveries">Delivery log</a>' in cards


async def test_retry_sends_a_queued_delivery_now(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    webhook_id = await failed_delivery(web, server)
    server.mode = "ok"
    response = await post_form(web.client, f"/plugins/notes/deliveries/{webhook_id}/retry", htmx=True)
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<section id="deliveries">')
    assert f"Delivery {webhook_id} is queued again" in response.text
    await server.wait_for(2, "/memory")
    assert server.accepted() == {webhook_id: 1}

    async def sent() -> bool:
        records = await read_deliveries(web.services.kv, "notes", "alice")
        return [(r.status, r.attempt) for r in records] == [(200, 2), (500, 1)]

    await eventually(sent)
    assert await web.services.kv.hget(QUEUE_KEY, webhook_id) is None
    html = (await web.client.get("/plugins/notes/deliveries")).text
    assert _RETRY.findall(html) == []  # delivered: nothing to retry


async def test_retry_sends_a_given_up_delivery_again(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    kv = web.services.kv
    body = msgspec.json.encode(memory("m1")).decode()
    delivery = QueuedDelivery(
        plugin_id="notes", uid="alice", url=f"{server.url}/memory?uid=alice", body=body, attempt=7, due_at=0.0
    )
    await give_up(kv, "msg_given_up", delivery)
    at = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    record = DeliveryRecord(
        webhook_id="msg_given_up", at=at, url=delivery.url, status=None, attempt=7, error="timeout"
    )
    await append_delivery(kv, "notes", "alice", record)
    html = (await web.client.get("/plugins/notes/deliveries")).text
    assert _RETRY.findall(html) == ["msg_given_up"] and "<td>no answer</td>" in html
    response = await post_form(web.client, "/plugins/notes/deliveries/msg_given_up/retry", htmx=True)
    assert response.status_code == 200
    assert await kv.get(GIVEN_UP_PREFIX + "msg_given_up") is None
    await server.wait_for(1, "/memory")
    assert server.accepted() == {"msg_given_up": 1}


async def test_a_plain_retry_redirects_back_to_the_log(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    webhook_id = await failed_delivery(web, server)
    token = await csrf_token(web.client, "/plugins/notes/deliveries")
    response = await web.client.post(
        f"/plugins/notes/deliveries/{webhook_id}/retry", data={"_csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/plugins/notes/deliveries"


async def test_another_users_deliveries_are_neither_shown_nor_retried(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    webhook_id = await failed_delivery(web, server)
    token = await csrf_token(web.client, "/")
    assert (await web.client.post("/logout", data={"_csrf_token": token})).status_code in (200, 303)
    assert (await sign_in(web.client, web.tokens["bob"])).status_code == 303
    html = (await web.client.get("/plugins/notes/deliveries")).text
    assert "Nothing was sent to this plugin for you yet." in html and webhook_id not in html
    response = await post_form(web.client, f"/plugins/notes/deliveries/{webhook_id}/retry", htmx=True)
    assert response.status_code == 404
    queued = await web.services.kv.hget(QUEUE_KEY, webhook_id)
    assert queued is not None and msgspec.json.decode(queued, type=QueuedDelivery).due_at > hooked.clock()


async def test_unknown_deliveries_and_plugins_without_webhooks_are_404(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    webhook_id = await failed_delivery(web, server)
    assert (await web.client.get("/plugins/summary/deliveries")).status_code == 404
    assert (await web.client.get("/plugins/nope/deliveries")).status_code == 404
    for path in (
        "/plugins/notes/deliveries/msg_nope/retry",
        f"/plugins/summary/deliveries/{webhook_id}/retry",
    ):
        assert (await post_form(web.client, path, htmx=True)).status_code == 404, path
    cards = (await web.client.get("/plugins")).text
    assert 'href="/plugins/summary/deliveries"' not in cards


async def test_retry_without_the_csrf_token_is_refused(
    web: Site, hooked: OmiWebhooks, server: FakePluginServer
) -> None:
    webhook_id = await failed_delivery(web, server)
    before: Any = await web.services.kv.hget(QUEUE_KEY, webhook_id)
    for headers in ({}, {**HTMX, "X-CSRFToken": "nope"}):
        response = await web.client.post(f"/plugins/notes/deliveries/{webhook_id}/retry", headers=headers)
        assert response.status_code == 403
    assert await web.services.kv.hget(QUEUE_KEY, webhook_id) == before

"""``/live``: the conversation in progress, then new lines through channels, per user only."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import httpx
import pytest
import redis.asyncio
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.journal import OpenJournal, ProcessingMemories
from app.core.models import TranscriptSegment
from app.core.tokens import TokenService
from app.main import create_app
from app.plugins import TranscriptSession
from app.plugins.host import PluginHost
from app.plugins.manager import new_plugin_manager, register_plugin
from app.web.live import READY_TEXT, LiveFeed, LiveUpdate, build_channels
from builtin_plugins.live_feed import LiveFeedPlugin
from tests.web.conftest import HTMX, Site, web_services
from tests.web.server import ServerSentEvents, serving, sign_in_over_http

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/15"


def segment(
    text: str, start: float = 0.0, speaker: str = "SPEAKER_0", is_user: bool = False
) -> TranscriptSegment:
    return TranscriptSegment(text=text, speaker=speaker, is_user=is_user, start=start, end=start + 2)


async def open_journal(site: Site, uid: str, pm_id: str, segments: list[TranscriptSegment]) -> None:
    journals = ProcessingMemories(site.app.state.pipeline)
    journal = OpenJournal(
        uid=uid, processing_memory_id=pm_id, started_at=datetime(2026, 11, 23, 9, tzinfo=UTC)
    )
    await journals.open(journal)
    await journals.append(journal, segments)


async def test_the_live_page_starts_with_the_users_conversation_in_progress(web: Site) -> None:
    await open_journal(web, "alice", "pm-a", [segment("Shall we walk to the lake?", 65, "SPEAKER_1")])
    await open_journal(web, "alice", "pm-a2", [segment("I will bring <b>sandwiches</b>.", 70, is_user=True)])
    await open_journal(web, "bob", "pm-b", [segment("Bob's secret plan", 3)])
    response = await web.client.get("/live")
    assert response.status_code == 200
    html = response.text
    assert "<title>Live · omi</title>" in html and 'aria-current="page">Live' in html
    assert (
        '<span class="who">Speaker 1</span> <span class="at">1:05</span><p>Shall we walk to the lake?</p>'
        in html
    )
    assert '<span class="who">You</span> <span class="at">1:10</span>' in html
    assert "I will bring &lt;b&gt;sandwiches&lt;/b&gt;." in html
    assert "Bob&#39;s secret plan" not in html and "Bob's secret plan" not in html
    # the stream, through htmx's SSE extension from npm (no inline script)
    assert 'hx-ext="sse" sse-connect="/live/events"' in html and 'sse-swap="segments"' in html
    assert '<script src="/static/vendor/htmx-ext-sse.min.js?v=' in html
    assert html.count("<script") == html.count("<script src=")
    sse = await web.client.get("/static/vendor/htmx-ext-sse.min.js")
    assert sse.status_code == 200, "htmx-ext-sse is missing: run `make install` (npm ci)"
    assert 'defineExtension("sse"' in sse.text


async def test_with_nothing_in_progress_the_page_says_so(web: Site) -> None:
    html = (await web.client.get("/live")).text
    assert "Nothing is being recorded right now." in html
    assert "<li" not in html.split('id="live-lines"')[1].split("</ol>")[0]
    assert (await web.client.get("/live", headers=HTMX)).status_code == 200


def test_channels_are_per_user() -> None:
    feed = LiveFeed(ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True))
    assert feed.channel("alice") == "live:alice"
    assert len({feed.channel(uid) for uid in ("alice", "Alice", "bob", "alice:x")}) == 4
    prefixed = LiveFeed(feed.channels, prefix="tenant1:")
    assert prefixed.channel("alice") == "tenant1:live:alice"


async def test_each_user_streams_only_their_own_updates() -> None:
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    async with channels:
        await only_own_updates(LiveFeed(channels))


async def test_a_line_published_once_the_channels_have_stopped_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channels = ChannelsPlugin(backend=MemoryChannelsBackend(), arbitrary_channels_allowed=True)
    feed = LiveFeed(channels)
    async with channels:
        feed.publish("alice", "s-alice", [segment("while the app runs")])
    # a session still transcribing while the app shuts down
    with caplog.at_level("DEBUG", logger="omi_backend.web.live"):
        feed.publish("alice", "s-alice", [segment("after the app stopped")])
    assert [r.levelname for r in caplog.records if r.name == "omi_backend.web.live"] == ["DEBUG"]


async def test_each_user_streams_only_their_own_updates_over_redis() -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except OSError:
        pytest.skip("no Redis server on 127.0.0.1:6379 (scripts/ensure-redis starts one)")
    finally:
        await client.aclose()
    channels = build_channels(Settings(redis_url=REDIS_URL))
    async with channels:
        await only_own_updates(LiveFeed(channels, prefix="test-live-feed:"))


async def only_own_updates(feed: LiveFeed) -> None:
    alice = feed.stream("alice", heartbeat=120)
    bob = feed.stream("bob", heartbeat=120)
    assert await anext(alice) is None and await anext(bob) is None  # subscribed
    feed.publish("bob", "s-bob", [segment("Bob's secret plan")])
    feed.publish("alice", "s-alice", [segment("Hello from Alice")])
    feed.publish("Alice", "s-other", [segment("Another Alice")])
    assert await anext(alice) == LiveUpdate(session_id="s-alice", segments=[segment("Hello from Alice")])
    assert await anext(bob) == LiveUpdate(session_id="s-bob", segments=[segment("Bob's secret plan")])
    await alice.aclose()
    await bob.aclose()


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, list[TranscriptSegment]]] = []

    def publish(self, uid: str, session_id: str, segments: Sequence[TranscriptSegment]) -> None:
        self.published.append((uid, session_id, list(segments)))


async def test_the_live_feed_plugin_publishes_every_final_result_always_on() -> None:
    plugin = LiveFeedPlugin()
    plugin.feed = Recorder()

    async def nobody_enabled_it(plugin_id: str, uid: str) -> bool:
        return False

    pm = new_plugin_manager()
    register_plugin(pm, plugin, "live_feed")
    host = PluginHost(pm, timeout=5.0, is_enabled=nobody_enabled_it)
    await host.on_transcript(TranscriptSession(id="s1", uid="alice"), [segment("Hi")])
    await host.on_transcript(TranscriptSession(id="s1", uid="alice"), [])
    host.close()
    assert plugin.feed.published == [("alice", "s1", [segment("Hi")])]
    assert host.errors("live_feed") == []
    info = host.info("live_feed")
    assert info is not None and info.always_on


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """``(event, data)`` of each server-sent event (comments skipped)."""
    reader = ServerSentEvents()
    for line in response.iter_lines():
        if (event := reader.feed(line)) is not None:
            yield event


def test_the_event_stream_carries_only_the_signed_in_users_lines(
    settings: Settings, embedder: MiniLMEmbedder
) -> None:
    services = web_services(settings.data_dir, embedder)
    app = create_app(settings, services=services)
    with serving(app) as served:
        tokens = {uid: served.run(TokenService(services.kv).create(uid)) for uid in ("alice", "bob")}
        timeout = httpx.Timeout(60.0)
        with (
            httpx.Client(base_url=served.url, timeout=timeout) as alice,
            httpx.Client(base_url=served.url, timeout=timeout) as bob,
        ):
            sign_in_over_http(alice, tokens["alice"])
            sign_in_over_http(bob, tokens["bob"])
            with alice.stream("GET", "/live/events") as a, bob.stream("GET", "/live/events") as b:
                assert a.status_code == 200 and a.headers["content-type"].startswith("text/event-stream")
                assert a.headers["cache-control"] == "no-cache"
                alice_events, bob_events = sse_events(a), sse_events(b)
                assert next(alice_events) == ("ready", READY_TEXT)
                assert next(bob_events) == ("ready", READY_TEXT)
                host: PluginHost = app.state.plugins
                bobs = [segment("Bob's secret plan", 3)]
                served.run(host.on_transcript(TranscriptSession(id="s-bob", uid="bob"), bobs))
                alices = [segment("<b>Hello</b> from Alice", 65, "SPEAKER_1")]
                served.run(host.on_transcript(TranscriptSession(id="s-alice", uid="alice"), alices))
                event, html = next(alice_events)
                assert event == "segments"
                assert '<li class="turn line" data-session="s-alice">' in html
                assert '<span class="who">Speaker 1</span> <span class="at">1:05</span>' in html
                assert "<p>&lt;b&gt;Hello&lt;/b&gt; from Alice</p>" in html and "Bob" not in html
                event, html = next(bob_events)
                assert event == "segments" and "Bob&#39;s secret plan" in html and "Alice" not in html
        anonymous = httpx.get(f"{served.url}/live/events", follow_redirects=False)
        assert anonymous.status_code == 303

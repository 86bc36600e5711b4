"""``/live``: the conversation the Omi app is recording, line by line.

Final results of a user's live sessions reach the page through Litestar Channels. The
built-in ``live_feed`` plugin hands each one (``on_transcript``) to :meth:`LiveFeed.publish`,
which publishes it on that user's channel, ``live:{uid}``. ``/live/events`` streams the
signed-in user's channel, and no other, to the browser as server-sent events: each event is
a fragment of HTML lines that htmx's SSE extension (the npm package ``htmx-ext-sse``)
appends to the page. The page starts with the lines of the conversation in progress (the
user's open journals), so it can be read without JavaScript.

Channels live in memory (embedded, one process), or go through Redis pub/sub when
``REDIS_URL`` is set, so a browser served by one process sees a session held by another.
While Redis is down (restarting) the lines of that moment are not published (the live page
misses them; the journal and the memory keep them), and the subscriptions come back with it.
A stream sends a comment every :data:`HEARTBEAT_SECONDS` (which also finds browsers that
left), ends when the session's token is revoked, and ends by itself after
:data:`STREAM_SECONDS` (the browser reconnects at once), so that a server can stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
from litestar import Controller, get
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.di import NamedDependency
from litestar.plugins.htmx import HTMXRequest
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template
from redis.exceptions import RedisError

from app.config import Settings
from app.core.journal import OPEN_KEY, OpenJournal, ProcessingMemories
from app.core.models import TranscriptSegment
from app.core.pipeline import MemoryPipeline
from app.web.auth import WebAuth
from app.web.rendering import page

__all__ = [
    "EVENT",
    "HEARTBEAT_SECONDS",
    "READY",
    "STREAM_SECONDS",
    "LiveFeed",
    "LivePage",
    "LiveUpdate",
    "build_channels",
    "open_segments",
]

EVENT: Final = "segments"
"""The SSE event type of new lines (``sse-swap="segments"`` on the page)."""
READY: Final = "ready"
"""The SSE event sent once the stream is subscribed: the page's status line swaps it in."""
READY_TEXT: Final = "Connected: what the Omi app records now appears below."
HEARTBEAT_SECONDS: Final = 15.0
STREAM_SECONDS: Final = 600.0
RETRY_MS: Final = 2_000
BACKLOG: Final = 256
_LINES = "live/_lines.html"

log = logging.getLogger("omi_backend.web.live")


class LiveUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One final result of a live session, as published on the user's channel."""

    session_id: str
    segments: list[TranscriptSegment]


class _RedisPubSub(RedisChannelsPubSubBackend):
    """Litestar's Redis pub/sub backend, closing its own connection pool at shutdown, and
    outliving a Redis restart: an error in Litestar's publishing or listening task would
    end that task for good (and make the shutdown wait forever for the publishing queue)."""

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self._redis.aclose()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        try:
            await super().publish(data, channels)
        except RedisError as exc:
            log.warning("live feed: a line was not published: %s", exc)

    async def stream_events(self) -> AsyncGenerator[tuple[str, Any], None]:
        delay = 0.1
        while True:
            try:
                async for event in super().stream_events():
                    delay = 0.1
                    yield event
            except RedisError as exc:  # the next read reconnects and subscribes again
                log.warning("live feed: listening failed, again in %.1f s: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)


def build_channels(settings: Settings) -> ChannelsPlugin:
    """The channels: in memory, or over Redis pub/sub when ``REDIS_URL`` is set."""
    if settings.redis_url:
        from app.backends.redis_kv import redis_client

        backend: Any = _RedisPubSub(redis=redis_client(settings.redis_url))
    else:
        backend = MemoryChannelsBackend()
    return ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        subscriber_max_backlog=BACKLOG,
        subscriber_backlog_strategy="dropleft",  # a browser that falls behind loses the oldest lines
    )


class LiveFeed:
    """Each user's live lines, published and streamed on a channel of their own.

    Args:
        channels: The app's channels plugin.
        prefix: Put before every channel name (``OMI_REDIS_PREFIX``: Redis channels are
            shared by every database of a server).
    """

    def __init__(self, channels: ChannelsPlugin, prefix: str = "") -> None:
        self.channels = channels
        self.prefix = prefix

    def __deepcopy__(self, memo: dict[int, Any]) -> LiveFeed:
        return self  # a service, shared by the router copies Litestar makes

    def channel(self, uid: str) -> str:
        """The channel of ``uid``'s live sessions."""
        return f"{self.prefix}live:{uid}"

    def publish(self, uid: str, session_id: str, segments: Sequence[TranscriptSegment]) -> None:
        """Publish one final result of ``uid``'s session (returns at once). Once the app is
        shutting down (its channels stopped), a session still transcribing has no page to show
        it to: the line is dropped (its words are in the session's memory)."""
        update = LiveUpdate(session_id=session_id, segments=list(segments))
        try:
            self.channels.publish(msgspec.json.encode(update), self.channel(uid))
        except RuntimeError as exc:  # litestar: "Plugin not yet initialized" (or stopped)
            log.debug("live feed: the channels are not running; a line was not shown: %s", exc)

    @asynccontextmanager
    async def subscription(self, uid: str) -> AsyncIterator[asyncio.Queue[LiveUpdate]]:
        """A queue of ``uid``'s updates for as long as the context lasts."""
        queue: asyncio.Queue[LiveUpdate] = asyncio.Queue(maxsize=BACKLOG)
        decode = msgspec.json.Decoder(LiveUpdate).decode

        async def receive(raw: bytes) -> None:
            await queue.put(decode(raw))

        async with (
            self.channels.start_subscription(self.channel(uid)) as subscriber,
            subscriber.run_in_background(receive, join=False),
        ):
            yield queue

    async def stream(
        self,
        uid: str,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        lifetime: float = STREAM_SECONDS,
    ) -> AsyncIterator[LiveUpdate | None]:
        """``uid``'s updates as they come: ``None`` first, once subscribed, then after each
        ``heartbeat`` seconds without an update; the stream ends after ``lifetime`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lifetime
        async with self.subscription(uid) as queue:
            yield None
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(heartbeat, left)):
                        update = await queue.get()
                except TimeoutError:
                    yield None
                    continue
                yield update


async def open_segments(pipeline: MemoryPipeline, uid: str) -> list[TranscriptSegment]:
    """The segments of ``uid``'s conversations in progress (open journals), oldest first."""
    journals = ProcessingMemories(pipeline)
    mine = []
    for raw in (await pipeline.services.kv.hgetall(OPEN_KEY)).values():
        try:
            journal = msgspec.json.decode(raw, type=OpenJournal)
        except msgspec.ValidationError:
            continue
        if journal.uid == uid:
            mine.append(journal)
    segments: list[TranscriptSegment] = []
    for journal in sorted(mine, key=lambda j: j.started_at):
        segments.extend(await journals.segments(journal))
    return segments


async def _events(
    request: HTMXRequest, uid: str, feed: LiveFeed, web_auth: WebAuth, render: Callable[..., str]
) -> AsyncIterator[ServerSentEventMessage]:
    ready = False
    async for update in feed.stream(uid):
        if update is None and not ready:  # subscribed: from now on nothing is missed
            ready = True
            yield ServerSentEventMessage(event=READY, data=READY_TEXT, retry=RETRY_MS)
        elif update is None:
            if await web_auth.user(request) != uid:  # signed out, or the token was revoked
                return
            yield ServerSentEventMessage(data=None, comment="ping")
        else:
            html = render(segments=update.segments, session_id=update.session_id)
            yield ServerSentEventMessage(event=EVENT, data=html)


class LivePage(Controller):
    """``/live`` and its event stream ``/live/events``."""

    path = "/live"

    @get("", name="live")
    async def live(
        self, request: HTMXRequest, uid: NamedDependency[str], pipeline: NamedDependency[MemoryPipeline]
    ) -> Template:
        """The live page with the conversation in progress so far."""
        segments = await open_segments(pipeline, uid)
        return page(request, "live/index.html", section="live", segments=segments, session_id="")

    @get("/events", name="live_events")
    async def events(
        self,
        request: HTMXRequest,
        uid: NamedDependency[str],
        live_feed: NamedDependency[LiveFeed],
        web_auth: NamedDependency[WebAuth],
    ) -> ServerSentEvent:
        """The signed-in user's new lines, as server-sent events."""
        engine = request.app.template_engine
        if engine is None:  # pragma: no cover - build_web always configures one
            raise RuntimeError("no template engine")
        template = engine.get_template(_LINES)
        return ServerSentEvent(_events(request, uid, live_feed, web_auth, template.render))

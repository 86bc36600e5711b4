"""The ``live_feed`` plugin: each final result of a live session, to that user's live page.

It is always on: for every ``on_transcript`` (a final result of a user's live session) it
hands the new segments to the server's live feed, ``context.extras["live_feed"]``, which
publishes them on that user's channel; the web page ``/live`` of that user, and only that
user, shows them as they come. Publishing returns at once, so a live session never waits on
a browser.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from app.core.models import TranscriptSegment
from app.plugins import PluginContext, PluginInfo, TranscriptSession, hookimpl

__all__ = ["LiveFeedPlugin", "Publisher"]

log = logging.getLogger("omi_backend.plugins.live_feed")


class Publisher(Protocol):
    """What the server offers as ``context.extras["live_feed"]``."""

    def publish(self, uid: str, session_id: str, segments: Sequence[TranscriptSegment]) -> None:
        """Publish one final result of ``uid``'s session ``session_id``."""


class LiveFeedPlugin:
    """The plugin object; the server makes one per app (entry point ``live_feed``)."""

    def __init__(self) -> None:
        self.feed: Publisher | None = None

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(
            name="Live transcript",
            author="omi-backend",
            description="Shows what the Omi app is recording on the web app's live page.",
            always_on=True,
        )

    @hookimpl
    async def on_startup(self, context: PluginContext) -> None:
        feed = context.extras.get("live_feed")
        if feed is None:
            log.warning("the server offers no live feed: the live page shows no new lines")
        self.feed = feed

    @hookimpl
    async def on_transcript(self, session: TranscriptSession, segments: list[TranscriptSegment]) -> None:
        if self.feed is not None and segments:
            self.feed.publish(session.uid, session.id, segments)

"""Every live session of a server, and the processing memories they leave behind.

:class:`ListenManager` opens :class:`~app.core.listen.ListenSession` objects for ``/listen``,
ends them (their last words and memory are saved even if the WebSocket handler is
cancelled), makes a user's new session wait for the end of their previous one (so it can
resume what that one saved), finishes the journals a crash left open
(:meth:`ListenManager.recover`), and keeps the background tasks: memories being made, which
shutdown waits for, and ``on_transcript`` dispatches, which it cancels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from app.core.audio import make_decoder
from app.core.journal import ProcessingMemories
from app.core.listen import ClientSink, ListenConfig, ListenParams, ListenSession, TranscriptCallback
from app.core.models import utcnow
from app.core.pipeline import MemoryPipeline
from app.core.ports import SpeechToText

__all__ = ["ListenManager"]

log = logging.getLogger("omi_backend.listen")


class ListenManager:
    """Every live session of the server, and the processing memories they leave behind.

    Args:
        stt: The speech-to-text engine.
        pipeline: Makes memories (and gives the KeyValue port and BlobStore).
        on_transcript: Dispatches ``on_transcript`` to the plugins.
        config: Timings.
        clock: Wall-clock time (tests).
    """

    def __init__(
        self,
        stt: SpeechToText,
        pipeline: MemoryPipeline,
        on_transcript: TranscriptCallback,
        config: ListenConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.stt = stt
        self.pipeline = pipeline
        self.journals = ProcessingMemories(pipeline)
        self.on_transcript = on_transcript
        self.config = config or ListenConfig()
        self.clock = clock
        self.sessions: set[ListenSession] = set()
        self._ending: dict[str, asyncio.Task[None]] = {}  # uid -> the end of its last session
        self._saving: set[asyncio.Future[Any]] = set()  # memories being made
        self._dispatches: set[asyncio.Future[Any]] = set()  # on_transcript calls

    async def open(self, uid: str, params: ListenParams, sink: ClientSink) -> ListenSession:
        """Start a session: decoder, resume, speech profile, engine stream, timers.

        Raises:
            AudioError: the codec, sample rate or channel count is not supported.
            ValueError: the engine does not know the language.
            Exception: the engine could not be reached (e.g. ``BackendUnavailable``).
        """
        decoder = make_decoder(params.codec, params.sample_rate, params.channels)
        ending = self._ending.get(uid)
        if ending is not None:  # the user's last session is still saving: resume what it saved
            await asyncio.wait({ending}, timeout=self.config.finish_timeout)
        session = ListenSession(self, uid, params, sink, decoder)
        await session.start()
        self.sessions.add(session)
        return session

    async def end(self, session: ListenSession) -> None:
        """Finish ``session`` (last words, memory); runs to completion even if the caller is cancelled."""
        self.sessions.discard(session)
        task = asyncio.create_task(session.finish(), name=f"listen-end-{session.id}")
        self._ending[session.uid] = task
        self.spawn(task, saving=True)

        def forget(done: asyncio.Task[None]) -> None:
            if self._ending.get(session.uid) is done:
                del self._ending[session.uid]

        task.add_done_callback(forget)
        await asyncio.shield(task)

    async def recover(self) -> int:
        """Finish every processing memory a crash or restart left open."""
        return await self.journals.recover()

    async def close(self) -> None:
        """Wait (bounded) for the memories being made; stop the plugin dispatches still running."""
        if self._saving:
            await asyncio.wait(set(self._saving), timeout=self.config.finish_timeout)
        for task in set(self._dispatches):
            task.cancel()

    def spawn(self, work: Awaitable[Any], *, saving: bool = False) -> None:
        """Run ``work`` in the background, kept until done, failures logged.

        ``saving`` work (making a memory) is waited for at shutdown; the rest is cancelled.
        """
        task = asyncio.ensure_future(work)
        tasks = self._saving if saving else self._dispatches
        tasks.add(task)

        def done(finished: asyncio.Future[Any]) -> None:
            tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background task failed", exc_info=finished.exception())

        task.add_done_callback(done)

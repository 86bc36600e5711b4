"""Live sessions: decode -> stream to STT -> segments -> journal -> client and plugins -> memory.

A :class:`ListenSession` serves one ``/listen`` WebSocket (the sessions of a server are
kept by :class:`app.core.listen_manager.ListenManager`). It owns the decoder of its codec,
one speech-to-text stream, the processing memory being filled and a silence timer. Each
final result is handled in order:

1. with a speech profile, the profile's segments are dropped, the speaker who spoke it is
   marked ``is_user`` and the times move back by the profile's length;
2. the times move onto the session timeline (a resumed session continues where the last one
   stopped);
3. the segments are journalled in the KeyValue port (:mod:`app.core.journal`), and only then
   sent to the client, so whatever the client saw survives a crash; while the port is down
   the journal holds the write (and with it the results that follow) for a bounded time,
   after which the session is closed (1011, with the reason) and keeps nothing more;
4. ``on_transcript`` is dispatched to the plugins in a task of its own (never awaited by the
   session).

The processing memory becomes a memory ``silence_seconds`` after the last speech, or when
the client goes (after the engine has delivered its last words). A client of the same user
that reconnects within ``silence_seconds`` of the last speech continues the same processing
memory, and its memory is brought up to date when that session ends. Nothing here blocks:
decoding costs microseconds a frame and recognition runs in the engine's own workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from app.core.activity import VoiceActivity
from app.core.audio import TARGET_RATE, AudioDecoder
from app.core.errors import BackendUnavailable, StorageFull
from app.core.journal import OpenJournal, ResumeOffer
from app.core.models import Memory, TranscriptSegment
from app.core.ports import SpeechStream
from app.core.speech_profile import load_profile
from app.core.transcript import ProfileFilter, merge_into, shift

if TYPE_CHECKING:
    from app.core.listen_manager import ListenManager

__all__ = ["ClientSink", "ListenConfig", "ListenParams", "ListenSession", "TranscriptCallback"]

log = logging.getLogger("omi_backend.listen")

BYTES_PER_SECOND: Final = 2 * TARGET_RATE
PROFILE_PAD_S: Final = 1.0  # silence after the profile, so the engine ends its utterance there
SEND_CHUNK: Final = BYTES_PER_SECOND // 4
PENDING_MARGIN_S: Final = 1.0  # voiced audio this far past the last words: the engine is still on it
PENDING_GRACE_S: Final = 10.0  # the most the silence timer waits for those words
STORE_FAILED: Final = 1011  # the close code when results can no longer be journalled
DISK_FULL: Final = 1013  # ... because the server's disk is full (try again later)
DISK_FULL_REASON: Final = "the server's disk is full: the transcript cannot be saved, try again later"

TranscriptCallback = Callable[[str, str, list[TranscriptSegment]], Awaitable[None]]
"""``await on_transcript(session_id, uid, segments)``: the plugins' ``on_transcript``."""


class ClientSink(Protocol):
    """Where a session's messages go: text frames of the WebSocket (an ``Outbox``)."""

    async def send_text(self, text: str) -> None:
        """Send (or queue) one text frame without waiting on the client; may raise once it is gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` and ``reason``; harmless once it is closed."""


class ListenParams(msgspec.Struct, kw_only=True, frozen=True):
    """The query parameters of ``/listen`` (contract section 4), parsed."""

    language: str = "en"
    sample_rate: int = 8000
    codec: str = "pcm8"
    channels: int = 1
    include_speech_profile: bool = True
    new_memory_watch: bool = False


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Timings of live sessions (``OMI_MEMORY_SILENCE_SECONDS``, ``OMI_LISTEN_PING_SECONDS``,
    ``OMI_LISTEN_IDLE_SECONDS``)."""

    silence_seconds: float = 120.0
    ping_seconds: float = 30.0
    idle_seconds: float = 120.0  # the most the server waits on a client: for a frame, or to read
    finish_timeout: float = 180.0  # the most a session waits for the engine's last words (a backlog)


@dataclass(slots=True)
class _Processing:
    """The processing memory a session is filling."""

    journal: OpenJournal
    segments: list[TranscriptSegment] = field(default_factory=list)  # merged, session timeline


class ListenSession:
    """One live WebSocket session; see the module docstring."""

    def __init__(
        self, manager: ListenManager, uid: str, params: ListenParams, sink: ClientSink, decoder: AudioDecoder
    ) -> None:
        self.manager = manager
        self.uid = uid
        self.params = params
        self.id = uuid.uuid4().hex
        self._sink = sink
        self._decoder = decoder
        self._voice = VoiceActivity()
        self._journals = manager.journals
        self._config = manager.config
        self._stream: SpeechStream | None = None
        self._started_at = manager.clock()  # wall-clock time of the session timeline at _offset
        self._offset = 0.0  # session-timeline seconds of this connection's first live sample
        self._profile = ProfileFilter(0.0)  # the profile (and pad) the engine hears first
        self._live_bytes = 0
        self._processing: _Processing | None = None
        self._memories = 0  # processing memories this session has filled
        self._lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._client_gone = False
        self._failed = False  # results could not be journalled: the session is closing
        self._spoke = asyncio.Event()
        self._last_speech: float | None = None  # loop time of the last words or voiced audio
        self._last_speech_at: datetime | None = None  # the same, wall clock
        self._voiced_to = 0.0  # session-timeline end of the last voiced audio
        self._covered_to = 0.0  # session-timeline end of the last words delivered
        self._timers: list[asyncio.Task[None]] = []
        self._creating: asyncio.Task[tuple[OpenJournal, Memory] | None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        services = self.manager.pipeline.services
        profile = None
        if self.params.include_speech_profile:
            profile = await load_profile(services.blobs, services.kv, self.uid)
        self._stream = await self.manager.stt.open(
            language=self.params.language, sample_rate=TARGET_RATE, on_segments=self._on_segments
        )
        try:
            if profile:
                padded = profile + bytes(int(PROFILE_PAD_S * TARGET_RATE) * 2)
                self._profile = ProfileFilter(len(padded) / BYTES_PER_SECOND)
                for start in range(0, len(padded), SEND_CHUNK):
                    await self._stream.send(padded[start : start + SEND_CHUNK])
            await self._resume()
        except BaseException:
            await self._stream.close()
            raise
        if self._processing is not None:
            await self._event("new_processing_memory_created", processing_memory_id=self._processing_id)
        self._timers = [
            asyncio.create_task(self._ping(), name=f"listen-ping-{self.id}"),
            asyncio.create_task(self._watch_silence(), name=f"listen-silence-{self.id}"),
        ]

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio this connection has sent."""
        return self._live_bytes / BYTES_PER_SECOND

    async def feed(self, frame: bytes) -> None:
        """Decode one frame and hand it to the engine (raises ``AudioError`` for bad audio)."""
        pcm = self._decoder.decode(frame)
        if pcm and self._stream is not None:
            self._live_bytes += len(pcm)
            if self._voice.voiced(pcm):  # someone is talking: the silence timer starts again
                self._heard()
                self._voiced_to = self._offset + self._live_bytes / BYTES_PER_SECOND
            await self._stream.send(pcm)

    async def finish(self) -> None:
        """The client is gone: the engine's last words, then the memory; offer a resume."""
        for timer in self._timers:
            timer.cancel()
        self._client_gone = True
        stream, self._stream = self._stream, None
        if stream is not None and self._failed:  # results are dropped now: no waiting for the last words
            await stream.close()
        elif stream is not None:
            try:
                tail = self._decoder.flush()
                if tail:
                    self._live_bytes += len(tail)
                    await stream.send(tail)
                async with asyncio.timeout(self._config.finish_timeout):
                    await stream.finish()
            except Exception:
                log.exception("session %s: the engine failed while finishing; keeping what arrived", self.id)
            finally:
                await stream.close()
        if self._creating is not None:  # the silence timer's memory, still being made
            await asyncio.wait({self._creating})
        created = await self._make_memory()
        remaining = self._window_left()
        if created is None or remaining <= 0 or self._last_speech_at is None:
            return
        journal, memory = created
        offer = ResumeOffer(
            journal=journal,
            memory_id=memory.id,
            timeline_end=self._offset + self._live_bytes / BYTES_PER_SECOND,
            last_speech_at=self._last_speech_at,
        )
        await self._journals.offer(offer, remaining)

    # -- results -----------------------------------------------------------------------------

    @property
    def _processing_id(self) -> str | None:
        return self._processing.journal.processing_memory_id if self._processing else None

    async def _on_segments(self, segments: list[TranscriptSegment]) -> None:
        live = self._place(segments)
        if not live or self._failed:
            return
        try:
            async with self._lock:
                created = self._processing is None
                if self._processing is None:
                    self._processing = await self._new_processing(live[0].start)
                processing = self._processing
                await self._journals.append(processing.journal, live)
                merge_into(processing.segments, live)
                self._covered_to = max(self._covered_to, live[-1].end)
                self._heard()
                self._spoke.set()
        except BackendUnavailable as exc:  # held as long as the journal holds writes
            await self._fail(f"{exc.backend} is unavailable: the transcript cannot be saved, reconnect later")
            return
        except StorageFull:  # the data dir's disk: refused at once, nothing journalled
            await self._fail(DISK_FULL_REASON, DISK_FULL)
            return
        if created:
            await self._event(
                "new_processing_memory_created", processing_memory_id=processing.journal.processing_memory_id
            )
        await self._send(msgspec.json.encode(live).decode())
        self.manager.spawn(self.manager.on_transcript(self.id, self.uid, live))

    def _place(self, segments: list[TranscriptSegment]) -> list[TranscriptSegment]:
        """Without the profile's segments (the user marked), moved onto the session timeline."""
        return shift(self._profile.live(segments), self._offset)

    async def _new_processing(self, first_start: float) -> _Processing:
        """A new processing memory whose first words start at ``first_start`` (session timeline).

        The session's first processing memory starts with the session; a later one (after the
        silence timer made a memory) at the second its first words begin.
        """
        base = self._offset if self._memories == 0 else float(int(first_start))
        self._memories += 1
        journal = OpenJournal(
            uid=self.uid,
            processing_memory_id=uuid.uuid4().hex,
            started_at=self._started_at + timedelta(seconds=base - self._offset),
            base=base,
            language=self.params.language,
        )
        await self._journals.open(journal)
        return _Processing(journal)

    async def _resume(self) -> None:
        """Continue the user's last processing memory if it is still inside its window."""
        claimed = await self._journals.claim(self.uid)
        if claimed is None:
            return
        offer, segments = claimed
        journal = offer.journal
        self._offset = self._voiced_to = self._covered_to = offer.timeline_end
        self._memories = 1
        await self._journals.open(journal)
        if segments:
            await self._journals.append(journal, segments)
        self._processing = _Processing(journal, list(segments))
        silent_for = max(0.0, (self.manager.clock() - offer.last_speech_at).total_seconds())
        self._last_speech = asyncio.get_running_loop().time() - silent_for
        self._last_speech_at = offer.last_speech_at

    # -- memory ------------------------------------------------------------------------------

    async def _make_memory(self) -> tuple[OpenJournal, Memory] | None:
        """Turn the processing memory into its memory; ``None`` without one or on failure."""
        async with self._lock:
            processing, self._processing = self._processing, None
        if processing is None:
            return None
        journal = processing.journal
        pm_id = journal.processing_memory_id
        await self._event("new_memory_creating", processing_memory_id=pm_id)
        try:
            memory, messages = await self._journals.finish(journal, processing.segments)
        except Exception:
            log.exception("session %s: memory of %s failed; the journal stays open", self.id, pm_id)
            await self._event("new_memory_create_failed", processing_memory_id=pm_id)
            return None
        await self._event(
            "new_memory_created",
            processing_memory_id=pm_id,
            memory_id=memory.id,
            memory=memory,
            messages=messages,
            message_ids=[m.id for m in messages],
        )
        return journal, memory

    def _heard(self) -> None:
        self._last_speech = asyncio.get_running_loop().time()
        self._last_speech_at = self.manager.clock()

    def _window_left(self) -> float:
        if self._last_speech is None:
            return 0.0
        return self._last_speech + self._config.silence_seconds - asyncio.get_running_loop().time()

    async def _watch_silence(self) -> None:
        """Make the memory ``silence_seconds`` after the last speech, while the client stays."""
        while True:
            self._spoke.clear()
            if self._processing is None:
                await self._spoke.wait()
                continue
            remaining = self._window_left()
            if remaining <= 0 and self._voiced_to > self._covered_to + PENDING_MARGIN_S:
                # speech the engine has not delivered yet (a long utterance being recognised)
                remaining += PENDING_GRACE_S
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._spoke.wait()
                continue
            # its own task: finish() cancels this watcher, never a memory half made
            self._creating = asyncio.create_task(self._make_memory(), name=f"listen-memory-{self.id}")
            self.manager.spawn(self._creating, saving=True)
            await asyncio.shield(self._creating)

    # -- client ------------------------------------------------------------------------------

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self._config.ping_seconds)
            await self._send('{"type":"ping"}')

    async def _event(self, name: str, **fields: Any) -> None:
        if self.params.new_memory_watch:
            await self._send(msgspec.json.encode({"type": name, "event_type": name, **fields}).decode())

    async def _fail(self, reason: str, code: int = STORE_FAILED) -> None:
        """Results can no longer be journalled: show the client none, and close it."""
        self._failed = True
        log.error("session %s: closing: %s", self.id, reason)
        async with self._send_lock:
            self._client_gone = True
            try:
                await self._sink.close(code, reason)
            except Exception as exc:
                log.debug("session %s: close failed (%s)", self.id, exc)

    async def _send(self, text: str) -> None:
        if self._client_gone:
            return
        async with self._send_lock:
            try:
                await self._sink.send_text(text)
            except Exception as exc:  # the client went away: nothing more to send it
                log.debug("session %s: client gone (%s)", self.id, exc)
                self._client_gone = True

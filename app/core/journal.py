"""Processing memories: the durable side of live sessions, kept in the KeyValue port.

A processing memory is a conversation that has not become a memory yet. Its segments are
appended to a journal as each final result arrives, before the client sees them, so a crash
loses nothing the client was shown. Keys:

``listen:open`` (hash)
    One field per open processing memory (its id) holding :class:`OpenJournal` as JSON.
``listen:journal:{uid}:{processing_memory_id}`` (list)
    One JSON array of segments per final result, in session-timeline seconds.
``listen:resume:{uid}`` (string, expires)
    :class:`ResumeOffer`: the last processing memory of the user, which a new session may
    take over until ``OMI_MEMORY_SILENCE_SECONDS`` after its last speech.

:meth:`ProcessingMemories.finish` turns a journal into its memory through
:meth:`MemoryPipeline.create` (idempotent per processing memory id), or, for a resumed
processing memory whose memory exists already, updates that memory with the longer
transcript; then it closes the journal. :meth:`ProcessingMemories.recover` finishes every
journal left open by a crash or a restart.

The KeyValue port may be down for a while (Redis restarting, failing over): every write
here is retried with backoff while it answers ``BackendUnavailable`` (:mod:`app.core.holding`),
and only then fails, so that a short outage only delays a live session. Opening and appending
(a client waits for its results) hold for ``hold_seconds`` (:data:`HOLD_SECONDS`); making the
memory, closing the journal and offering a resume (after the client has gone, in the
background) for ``end_hold_seconds`` (:data:`END_HOLD_SECONDS`), so that a session cut short
by a longer outage still ends as a memory its user can resume. A retried append may have
been applied already (its reply lost with the connection): :meth:`ProcessingMemories.segments`
reads a batch repeated in a journal once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Final, TypeVar

import msgspec

from app.core.holding import held
from app.core.models import CreateMemory, Memory, Message, TranscriptSegment
from app.core.pipeline import MemoryPipeline, vector_id
from app.core.transcript import merged, shift, transcript_text

__all__ = [
    "END_HOLD_SECONDS",
    "HOLD_SECONDS",
    "OPEN_KEY",
    "OpenJournal",
    "ProcessingMemories",
    "ResumeOffer",
    "journal_key",
    "resume_key",
]

log = logging.getLogger("omi_backend.listen")

OPEN_KEY = "listen:open"
HOLD_SECONDS: Final = 15.0
"""How long a live session's journal write waits for the KeyValue port to come back."""
END_HOLD_SECONDS: Final = 60.0
"""How long the end of a processing memory (memory, close, resume offer) waits for it."""

_T = TypeVar("_T")


def journal_key(uid: str, processing_memory_id: str) -> str:
    return f"listen:journal:{uid}:{processing_memory_id}"


def resume_key(uid: str) -> str:
    return f"listen:resume:{uid}"


class OpenJournal(msgspec.Struct, kw_only=True, frozen=True):
    """An open processing memory.

    Attributes:
        uid: Its owner.
        processing_memory_id: Its id (also the memory's idempotency key).
        started_at: The wall-clock time of ``base`` on the session timeline.
        base: Session-timeline seconds where the processing memory starts; the memory's
            segment times are relative to it.
        language: The session's language.
    """

    uid: str
    processing_memory_id: str
    started_at: datetime
    base: float = 0.0
    language: str = "en"


class ResumeOffer(msgspec.Struct, kw_only=True, frozen=True):
    """A finished processing memory that the user's next session may continue.

    Attributes:
        journal: The processing memory.
        memory_id: The memory it became.
        timeline_end: Session-timeline seconds where the last session stopped; the next one
            continues from there.
        last_speech_at: When its last words were spoken (the window runs from there).
    """

    journal: OpenJournal
    memory_id: str
    timeline_end: float
    last_speech_at: datetime


_SEGMENTS = msgspec.json.Decoder(list[TranscriptSegment])


class ProcessingMemories:
    """The journals of live sessions, and their conversion into memories.

    Args:
        pipeline: Makes the memories; its KeyValue port keeps the journals.
        hold_seconds: The most an open or an append waits for an unavailable KeyValue port.
        end_hold_seconds: The most the end of a processing memory waits for it.
    """

    def __init__(
        self,
        pipeline: MemoryPipeline,
        hold_seconds: float = HOLD_SECONDS,
        end_hold_seconds: float = END_HOLD_SECONDS,
    ) -> None:
        self.pipeline = pipeline
        self.kv = pipeline.services.kv
        self.hold_seconds = hold_seconds
        self.end_hold_seconds = end_hold_seconds

    async def held(self, what: str, write: Callable[[], Awaitable[_T]], seconds: float | None = None) -> _T:
        """``await write()``, again while ``BackendUnavailable``, for at most ``seconds``
        (``hold_seconds`` when not given)."""
        return await held(what, write, self.hold_seconds if seconds is None else seconds)

    async def open(self, journal: OpenJournal) -> None:
        """Record ``journal`` as open (it is finished on the next start if never closed)."""
        value = msgspec.json.encode(journal).decode()
        await self.held(
            f"opening journal {journal.processing_memory_id}",
            lambda: self.kv.hset(OPEN_KEY, journal.processing_memory_id, value),
        )

    async def append(self, journal: OpenJournal, segments: list[TranscriptSegment]) -> None:
        """Journal one final result's segments (session-timeline times)."""
        key = journal_key(journal.uid, journal.processing_memory_id)
        batch = msgspec.json.encode(segments).decode()
        await self.held(f"journalling to {journal.processing_memory_id}", lambda: self.kv.append(key, batch))

    async def segments(self, journal: OpenJournal) -> list[TranscriptSegment]:
        """Every journalled segment, in order (a batch written twice by a retry, once)."""
        key = journal_key(journal.uid, journal.processing_memory_id)
        batches = dict.fromkeys(await self.kv.items(key))  # no two final results are identical
        return [s for batch in batches for s in _SEGMENTS.decode(batch)]

    async def close(self, journal: OpenJournal, *, hold: bool = True) -> None:
        """Forget the journal (its memory is made); ``hold``: through an outage, as :meth:`finish`."""

        async def close() -> None:
            await self.kv.hdel(OPEN_KEY, journal.processing_memory_id)
            await self.kv.delete(journal_key(journal.uid, journal.processing_memory_id))

        seconds = self.end_hold_seconds if hold else 0.0
        await self.held(f"closing journal {journal.processing_memory_id}", close, seconds)

    async def finish(
        self, journal: OpenJournal, segments: list[TranscriptSegment], *, hold: bool = True
    ) -> tuple[Memory, list[Message]]:
        """The memory of ``segments`` (session-timeline times), created or updated; then close.

        Making the memory is idempotent per processing memory, so with ``hold`` it is held
        through an outage (of the KeyValue port, or of another backend it needs) for up to
        ``end_hold_seconds``; without (the start-up recovery) the first failure is raised."""
        memory, messages = await self.held(
            f"making the memory of {journal.processing_memory_id}",
            lambda: self.materialise(journal, segments),
            self.end_hold_seconds if hold else 0.0,
        )
        await self.close(journal, hold=hold)
        return memory, messages

    async def materialise(
        self, journal: OpenJournal, segments: list[TranscriptSegment]
    ) -> tuple[Memory, list[Message]]:
        """Create the memory of a processing memory, or bring an existing one up to date."""
        transcript = merged(shift(segments, -journal.base))
        last = max((s.end for s in transcript), default=0.0)
        finished_at = journal.started_at + timedelta(seconds=last)
        request = CreateMemory(
            started_at=journal.started_at,
            finished_at=finished_at,
            transcript_segments=transcript,
            language=journal.language,
            processing_memory_id=journal.processing_memory_id,
        )
        memory, messages = await self.pipeline.create(journal.uid, request)
        if memory.transcript_segments != transcript and not memory.deleted:
            memory = await self._update(journal.uid, memory, transcript, finished_at)
        return memory, messages

    async def _update(
        self, uid: str, memory: Memory, transcript: list[TranscriptSegment], finished_at: datetime
    ) -> Memory:
        """A resumed conversation: the memory gets the whole transcript and is structured again."""
        memory.transcript_segments = transcript
        memory.finished_at = max(memory.finished_at, finished_at)
        services = self.pipeline.services
        if await services.llm.should_discard(transcript_text(transcript)):
            memory.discarded = True
            await services.store.put(uid, memory)
            await services.index.delete([vector_id(uid, memory.id)])
            return memory
        return await self.pipeline.reprocess(uid, memory)

    async def recover(self) -> int:
        """Finish every journal left open; the number of memories made (or brought up to date)."""
        done = 0
        for processing_memory_id, raw in (await self.kv.hgetall(OPEN_KEY)).items():
            try:
                journal = msgspec.json.decode(raw, type=OpenJournal)
            except msgspec.ValidationError:
                log.exception("unreadable open journal %s dropped", processing_memory_id)
                await self.kv.hdel(OPEN_KEY, processing_memory_id)
                continue
            try:
                segments = await self.segments(journal)
                if segments:
                    memory, _ = await self.finish(journal, segments, hold=False)
                    log.info(
                        "journal %s of %s finished as memory %s", processing_memory_id, journal.uid, memory.id
                    )
                    done += 1
                else:
                    await self.close(journal, hold=False)
            except Exception:
                log.exception(
                    "journal %s could not be finished; left open for the next start", processing_memory_id
                )
        return done

    async def offer(self, offer: ResumeOffer, ttl: float) -> None:
        """Let the user's next session continue ``offer`` for ``ttl`` seconds."""
        if ttl > 0:
            value = msgspec.json.encode(offer).decode()
            key = resume_key(offer.journal.uid)
            what = f"offering {offer.memory_id} for resume"
            await self.held(what, lambda: self.kv.set(key, value, ttl=ttl), self.end_hold_seconds)

    async def claim(self, uid: str) -> tuple[ResumeOffer, list[TranscriptSegment]] | None:
        """Take the user's resume offer, with the segments so far (session-timeline times).

        Only one session gets an offer (the one whose delete removed it); an offer whose
        memory is gone or deleted is dropped.
        """
        key = resume_key(uid)
        raw = await self.kv.get(key)
        if raw is None or not await self.kv.delete(key):
            return None
        try:
            offer = msgspec.json.decode(raw, type=ResumeOffer)
        except msgspec.ValidationError:
            return None
        memory = await self.pipeline.services.store.get(uid, offer.memory_id)
        if memory is None or memory.deleted or offer.journal.uid != uid:
            return None
        return offer, shift(memory.transcript_segments, offer.journal.base)

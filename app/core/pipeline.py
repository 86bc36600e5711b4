"""The memory pipeline: discard check -> structure -> store -> embed -> index -> plugins.

Every way a memory is made (``POST /v1/memories``, a live session, an integration) goes
through :meth:`MemoryPipeline.create`, so they all behave alike.

What follows the store write is owed durably: before a memory is written, it is entered in
the KeyValue hashes ``vectors:pending`` (to index) and ``memories:hooks_pending`` (to run
the plugins' ``on_memory_created``), fields ``{uid}:{memory_id}``, values the time. Each
entry is removed once its step is done. A step that fails, or a process killed between the
write and the end of the steps, leaves its entry, and :meth:`MemoryPipeline.finish_pending`
does the step later: at start-up and then every :data:`RETRY_SECONDS`. So a memory whose
creation was acknowledged is always indexed and announced to the plugins, at least once
(the webhooks plugin gives each memory's delivery a stable ``webhook-id``, so a receiver
sees it once).

A plugin whose ``on_memory_created`` raises or times out (the webhooks plugin when the
queue is out of reach, say) is called again, alone, with the same memory: its entry's value
becomes a :class:`_Retry` naming the plugins still owed, tried after a back-off that doubles
from :data:`RETRY_SECONDS` up to an hour, and given up (logged) after
:data:`MAX_HOOK_TRIES` calls, about six hours.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, Protocol

import msgspec

from app.core.models import CreateMemory, Memory, Message, PluginResult, SearchRequest, Structured, utcnow
from app.core.ports import VectorItem
from app.core.services import Services

__all__ = [
    "PENDING_HOOKS_KEY",
    "PENDING_INDEX_KEY",
    "Announced",
    "MemoryHooks",
    "MemoryPipeline",
    "memory_document",
    "vector_id",
]

log = logging.getLogger("omi_backend.pipeline")

PENDING_INDEX_KEY = "vectors:pending"
PENDING_HOOKS_KEY = "memories:hooks_pending"
RETRY_SECONDS = 60.0
"""How often the background pass finishes steps left pending, and how old an entry must be."""
ORPHAN_SECONDS = 300.0
"""An entry whose memory is still missing after this long was never written: it is dropped."""
MAX_HOOK_TRIES = 12
"""Calls of a failing plugin's ``on_memory_created`` for one memory before it is given up."""
MAX_BACKOFF_SECONDS = 3600.0


class Announced(msgspec.Struct, frozen=True, kw_only=True):
    """What ``on_memory_created`` gave: the plugins' messages, and which plugins failed."""

    messages: list[Message]
    failed: list[str] = []


class _Retry(msgspec.Struct, frozen=True, kw_only=True):
    """A ``memories:hooks_pending`` value for plugins that failed on the memory: which, when
    they were last called, and how many calls so far."""

    at: datetime
    plugins: list[str]
    tries: int

    def backoff(self) -> float:
        return min(RETRY_SECONDS * 2.0 ** (self.tries - 1), MAX_BACKOFF_SECONDS)


class MemoryHooks(Protocol):
    """What the pipeline needs of the plugin host."""

    async def on_memory_processing(self, uid: str, memory: Memory) -> list[PluginResult]: ...

    async def announce(self, uid: str, memory: Memory, only: Collection[str] | None = None) -> Announced:
        """``on_memory_created`` on every plugin (or those named in ``only``)."""
        ...


def vector_id(uid: str, memory_id: str) -> str:
    """The vector id of a memory: ``{uid}-{memory_id}`` (contract section 7)."""
    return f"{uid}-{memory_id}"


def memory_document(structured: Structured) -> str:
    """The text a memory is embedded by: its title and overview."""
    return f"{structured.title}. {structured.overview}".strip(" .")


def _processing_key(uid: str, processing_memory_id: str) -> str:
    return f"users:{uid}:processing_memories:{processing_memory_id}"


class MemoryPipeline:
    """Turns conversations into stored, indexed, structured memories."""

    def __init__(
        self, services: Services, hooks: MemoryHooks, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.services = services
        self.hooks = hooks
        self.clock = clock
        self._active: set[str] = set()  # entries a call of this process is working on
        self._background: asyncio.Task[None] | None = None

    async def create(
        self,
        uid: str,
        request: CreateMemory,
        *,
        external_data: dict[str, Any] | None = None,
        trigger_integrations: bool = True,
        memory_id: str | None = None,
    ) -> tuple[Memory, list[Message]]:
        """Process and store a new memory for ``uid``; returns it with the plugins' messages.

        With a ``processing_memory_id`` (or an explicit ``memory_id``), creation is idempotent:
        the second call returns the memory the first one made.
        """
        kv = self.services.kv
        if request.processing_memory_id and memory_id is None:
            key = _processing_key(uid, request.processing_memory_id)
            candidate = uuid.uuid4().hex
            if not await kv.add(key, candidate):
                memory_id = await kv.get(key) or candidate
            else:
                memory_id = candidate
        if memory_id is not None:
            existing = await self.services.store.get(uid, memory_id)
            if existing is not None:
                return existing, []
        memory = Memory(
            id=memory_id or uuid.uuid4().hex,
            created_at=self.clock(),
            started_at=request.started_at,
            finished_at=request.finished_at,
            source=request.source,
            language=request.language,
            transcript_segments=request.transcript_segments,
            geolocation=request.geolocation,
            photos=request.photos,
            external_data=external_data,
        )
        text = _conversation_text(memory)
        memory.discarded = await self.services.llm.should_discard(text)
        memory.structured = await self.services.llm.structure(text, memory.started_at, memory.language)
        kept = not memory.discarded
        if kept:
            memory.plugins_results = await self.hooks.on_memory_processing(uid, memory)
        entry = _entry(uid, memory.id)
        self._active.add(entry)  # the background pass leaves it to this call
        try:
            if kept:  # owed before the memory exists: a crash after the write leaves them owed
                await self._owe(PENDING_INDEX_KEY, entry)
                if trigger_integrations:
                    await self._owe(PENDING_HOOKS_KEY, entry)
            await self.services.store.put(uid, memory)
            # Stored: the request succeeds. What fails from here stays owed, done later.
            messages: list[Message] = []
            if kept:
                await self._index(uid, memory)
                if trigger_integrations:
                    messages = await self._announce(uid, memory)
        finally:
            self._active.discard(entry)
        return memory, messages

    async def reprocess(self, uid: str, memory: Memory) -> Memory:
        """Structure ``memory`` again from its transcript; it is kept (not discarded) afterwards."""
        text = _conversation_text(memory)
        memory.structured = await self.services.llm.structure(text, memory.started_at, memory.language)
        memory.discarded = False
        memory.plugins_results = await self.hooks.on_memory_processing(uid, memory)
        await self._put(uid, memory, index=True)
        return memory

    async def update(self, uid: str, memory: Memory, *, title: str | None, overview: str | None) -> Memory:
        """Replace the title and/or overview a person edited, and re-index the memory."""
        if title is not None:
            memory.structured.title = title
        if overview is not None:
            memory.structured.overview = overview
        await self._put(uid, memory, index=not memory.discarded and not memory.deleted)
        return memory

    async def discard(self, uid: str, memory: Memory) -> Memory:
        """Mark ``memory`` discarded (kept, shown as such, left out of search) and remove its vector."""
        memory.discarded = True
        await self.services.store.put(uid, memory)
        await self.services.index.delete([vector_id(uid, memory.id)])
        return memory

    async def delete(self, uid: str, memory: Memory) -> None:
        """Soft-delete ``memory`` and remove its vector."""
        memory.deleted = True
        await self.services.store.put(uid, memory)
        await self.services.index.delete([vector_id(uid, memory.id)])

    async def restore(self, uid: str, memory: Memory) -> Memory:
        """Bring back a discarded or deleted memory and index it again."""
        memory.discarded = False
        memory.deleted = False
        await self._put(uid, memory, index=True)
        return memory

    async def search(self, uid: str, request: SearchRequest) -> list[Memory]:
        """``uid``'s kept memories ranked by meaning against ``request.query``."""
        vector = (await self.services.embedder.embed([request.query]))[0]
        matches = await self.services.index.query(
            vector,
            uid=uid,
            top_k=request.limit,
            start=int(request.start_date.timestamp()) if request.start_date else None,
            end=int(request.end_date.timestamp()) if request.end_date else None,
        )
        memories = await self.services.store.get_many(uid, [m.memory_id for m in matches])
        return [m for m in memories if not m.discarded]

    async def reindex_pending(self, min_age: float = 0.0) -> int:
        """Index every memory left owed an index write (failed, or cut short by a crash)
        at least ``min_age`` seconds ago; the number fixed."""
        fixed = 0
        for entry, memory, _ in await self._owed(PENDING_INDEX_KEY, min_age):
            if memory is None or memory.deleted or memory.discarded:
                continue
            if await self._index(_split(entry)[0], memory):
                fixed += 1
        return fixed

    async def announce_pending(self, min_age: float = 0.0) -> int:
        """Run ``on_memory_created`` for every memory left owed it at least ``min_age``
        seconds ago (a crash between the store write and the plugins); the number done."""
        done = 0
        for entry, memory, retry in await self._owed(PENDING_HOOKS_KEY, min_age):
            if memory is None or memory.deleted or memory.discarded:
                continue
            self._active.add(entry)
            try:
                await self._announce(_split(entry)[0], memory, retry)
            finally:
                self._active.discard(entry)
            done += 1
        return done

    async def finish_pending(self, min_age: float = 0.0) -> tuple[int, int]:
        """Both passes: (memories indexed, memories announced)."""
        return await self.reindex_pending(min_age), await self.announce_pending(min_age)

    def start_background(self) -> None:
        """Announce what a crash left owed now, then finish owed steps every :data:`RETRY_SECONDS`."""
        if self._background is None:
            self._background = asyncio.create_task(self._finish_loop(), name="pipeline pending steps")

    async def stop_background(self) -> None:
        """Stop the background pass (what it had not done stays owed)."""
        task, self._background = self._background, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _finish_loop(self) -> None:
        min_age = 0.0  # at start nothing of this process is in flight
        while True:
            try:
                indexed, announced = await self.finish_pending(min_age)
                if indexed or announced:
                    log.info("finished owed steps: %d memories indexed, %d announced", indexed, announced)
            except Exception:
                log.exception("the pass over owed memory steps failed")
            min_age = RETRY_SECONDS
            await asyncio.sleep(RETRY_SECONDS)

    async def _owed(self, key: str, min_age: float) -> list[tuple[str, Memory | None, _Retry | None]]:
        """The entries of ``key`` at least ``min_age`` old (a retry: its back-off too) and not
        in hand here, with their memories (``None``: not written yet, or never) and retries;
        entries that need nothing more are dropped."""
        now = self.clock()
        found: list[tuple[str, Memory | None, _Retry | None]] = []
        for entry, value in (await self.services.kv.hgetall(key)).items():
            at, retry = _owed_value(value)
            age = _age(at, now)
            if entry in self._active or age < max(min_age, retry.backoff() if retry else 0.0):
                continue
            uid, memory_id = _split(entry)
            memory = await self.services.store.get(uid, memory_id)
            done = memory is not None and (memory.deleted or memory.discarded)
            if done or (memory is None and age >= ORPHAN_SECONDS):
                await self.services.kv.hdel(key, entry)
                continue
            found.append((entry, memory, retry))
        return found

    async def _put(self, uid: str, memory: Memory, *, index: bool) -> None:
        """Store a changed memory and, with ``index``, its new vector (owed before the write)."""
        if index:
            await self._owe(PENDING_INDEX_KEY, _entry(uid, memory.id))
        await self.services.store.put(uid, memory)
        if index:
            await self._index(uid, memory)

    async def _owe(self, key: str, entry: str) -> None:
        await self.services.kv.hset(key, entry, msgspec.json.encode(self.clock()).decode())

    async def _announce(self, uid: str, memory: Memory, retry: _Retry | None = None) -> list[Message]:
        """Run ``on_memory_created`` (on the plugins ``retry`` names, if given) and keep the
        plugins' messages; the entry stays owed if that fails, and names the plugins that
        failed, if some did. Never raises (but for cancellation)."""
        entry = _entry(uid, memory.id)
        try:
            announced = await self.hooks.announce(uid, memory, retry.plugins if retry else None)
            for message in announced.messages:
                await self.services.store.put_message(uid, message)
            tries = retry.tries + 1 if retry else 1
            if not announced.failed:
                await self.services.kv.hdel(PENDING_HOOKS_KEY, entry)
            elif tries >= MAX_HOOK_TRIES:
                log.error(
                    "plugins %s failed %d times on memory %s; given up", announced.failed, tries, memory.id
                )
                await self.services.kv.hdel(PENDING_HOOKS_KEY, entry)
            else:
                again = _Retry(at=self.clock(), plugins=announced.failed, tries=tries)
                log.warning(
                    "plugins %s failed on memory %s; called again in %g s",
                    again.plugins,
                    memory.id,
                    again.backoff(),
                )
                await self.services.kv.hset(PENDING_HOOKS_KEY, entry, msgspec.json.encode(again).decode())
        except Exception:
            log.exception("announcing memory %s failed; it stays owed", memory.id)
            return []
        return announced.messages

    async def _index(self, uid: str, memory: Memory) -> bool:
        """Embed and upsert the memory's vector, and clear its ``vectors:pending`` entry
        (which the caller wrote before the memory); on failure the entry stays, for
        :meth:`reindex_pending`. Never raises (but for cancellation)."""
        try:
            vector = (await self.services.embedder.embed([memory_document(memory.structured)]))[0]
            item = VectorItem(
                id=vector_id(uid, memory.id),
                values=vector.tolist(),
                uid=uid,
                memory_id=memory.id,
                created_at=int(memory.created_at.timestamp()),
            )
            await self.services.index.upsert([item])
            await self.services.kv.hdel(PENDING_INDEX_KEY, _entry(uid, memory.id))
        except Exception:
            log.exception("indexing memory %s failed; queued for re-indexing", memory.id)
            return False
        return True


def _entry(uid: str, memory_id: str) -> str:
    return f"{uid}:{memory_id}"


def _split(entry: str) -> tuple[str, str]:
    """The uid and memory id of a pending entry ``{uid}:{memory_id}`` (a uid may hold ":",
    a memory id never)."""
    uid, _, memory_id = entry.rpartition(":")
    return uid, memory_id


def _owed_value(value: str) -> tuple[datetime | None, _Retry | None]:
    """An entry's value: when it was owed (or last tried; ``None``: unreadable) and, for
    plugins that failed, its retry."""
    try:
        decoded = msgspec.json.decode(value, type=datetime | _Retry)
    except (msgspec.DecodeError, TypeError):
        return None, None
    return (decoded.at, decoded) if isinstance(decoded, _Retry) else (decoded, None)


def _age(stamp: datetime | None, now: datetime) -> float:
    """Seconds since an entry's time; an entry without a readable time counts as old."""
    try:
        return (now - stamp).total_seconds() if stamp is not None else float("inf")
    except TypeError:  # a naive time
        return float("inf")


def _conversation_text(memory: Memory) -> str:
    """What the language model reads: the transcript, or the photo descriptions without one."""
    text = memory.transcript_text()
    if text:
        return text
    return " ".join(p.description.strip() for p in memory.photos if p.description.strip())

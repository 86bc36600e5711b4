"""The memory pipeline: discard check -> structure -> store -> embed -> index -> plugins.

Every way a memory is made (``POST /v1/memories``, a live session, an integration) goes
through :meth:`MemoryPipeline.create`, so they all behave alike.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec

from app.core.models import CreateMemory, Memory, Message, PluginResult, SearchRequest, Structured, utcnow
from app.core.ports import VectorItem
from app.core.services import Services

__all__ = ["MemoryHooks", "MemoryPipeline", "memory_document", "vector_id"]

log = logging.getLogger("omi_backend.pipeline")

PENDING_INDEX_KEY = "vectors:pending"


class MemoryHooks(Protocol):
    """What the pipeline needs of the plugin host."""

    async def on_memory_processing(self, uid: str, memory: Memory) -> list[PluginResult]: ...

    async def on_memory_created(self, uid: str, memory: Memory) -> list[Message]: ...


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
        if not memory.discarded:
            memory.plugins_results = await self.hooks.on_memory_processing(uid, memory)
        await self.services.store.put(uid, memory)
        if not memory.discarded:
            await self._index(uid, memory)
        messages: list[Message] = []
        if trigger_integrations and not memory.discarded:
            messages = await self.hooks.on_memory_created(uid, memory)
            for message in messages:
                await self.services.store.put_message(uid, message)
        return memory, messages

    async def reprocess(self, uid: str, memory: Memory) -> Memory:
        """Structure ``memory`` again from its transcript; it is kept (not discarded) afterwards."""
        text = _conversation_text(memory)
        memory.structured = await self.services.llm.structure(text, memory.started_at, memory.language)
        memory.discarded = False
        memory.plugins_results = await self.hooks.on_memory_processing(uid, memory)
        await self.services.store.put(uid, memory)
        await self._index(uid, memory)
        return memory

    async def update(self, uid: str, memory: Memory, *, title: str | None, overview: str | None) -> Memory:
        """Replace the title and/or overview a person edited, and re-index the memory."""
        if title is not None:
            memory.structured.title = title
        if overview is not None:
            memory.structured.overview = overview
        await self.services.store.put(uid, memory)
        if not memory.discarded and not memory.deleted:
            await self._index(uid, memory)
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
        await self.services.store.put(uid, memory)
        await self._index(uid, memory)
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

    async def reindex_pending(self) -> int:
        """Index again every memory whose vector upsert failed earlier; the number fixed."""
        fixed = 0
        for entry in await self.services.kv.hgetall(PENDING_INDEX_KEY):
            uid, _, memory_id = entry.partition(":")
            memory = await self.services.store.get(uid, memory_id)
            if memory is None or memory.deleted or memory.discarded:
                await self.services.kv.hdel(PENDING_INDEX_KEY, entry)
                continue
            if await self._index(uid, memory):
                fixed += 1
        return fixed

    async def _index(self, uid: str, memory: Memory) -> bool:
        """Embed and upsert the memory's vector; on failure, queue it for :meth:`reindex_pending`."""
        pending = f"{uid}:{memory.id}"
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
        except Exception:
            log.exception("indexing memory %s failed; queued for re-indexing", memory.id)
            await self.services.kv.hset(
                PENDING_INDEX_KEY, pending, msgspec.json.encode(self.clock()).decode()
            )
            return False
        await self.services.kv.hdel(PENDING_INDEX_KEY, pending)
        return True


def _conversation_text(memory: Memory) -> str:
    """What the language model reads: the transcript, or the photo descriptions without one."""
    text = memory.transcript_text()
    if text:
        return text
    return " ".join(p.description.strip() for p in memory.photos if p.description.strip())

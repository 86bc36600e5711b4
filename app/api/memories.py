"""Memory routes of the Omi contract (section 3) and our additions (search, edit, restore)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, MediaType, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody, PathParameter, QueryParameter

from app.api.auth import require_user
from app.api.openapi import USER_SECURITY, errors
from app.core.models import (
    CreateMemory,
    Memory,
    MemorySource,
    Message,
    SearchRequest,
    ShortText,
    Text,
    Visibility,
    aware,
)
from app.core.pipeline import MemoryPipeline
from app.core.ports import MemoryQuery
from app.core.services import Services

__all__ = ["MemoriesController"]

MemoryId = Annotated[str, PathParameter(max_length=128)]


class CreateMemoryResponse(msgspec.Struct):
    memory: Memory
    messages: list[Message]


class EventsUpdate(msgspec.Struct):
    events_idx: Annotated[list[int], msgspec.Meta(max_length=1000)]
    values: Annotated[list[bool], msgspec.Meta(max_length=1000)]


class MemoryEdit(msgspec.Struct):
    title: ShortText | None = None
    overview: Text | None = None


class Status(msgspec.Struct):
    status: str


async def _owned(services: Services, uid: str, memory_id: str) -> Memory:
    memory = await services.store.get(uid, memory_id)
    if memory is None or memory.deleted:
        raise NotFoundException("memory not found")
    return memory


class MemoriesController(Controller):
    path = "/v1/memories"
    guards = (require_user,)
    security = USER_SECURITY
    tags = ("memories",)

    @post("", status_code=200, raises=errors(body=True, writes=True))
    async def create_memory(
        self,
        data: JSONBody[CreateMemory],
        uid: NamedDependency[str],
        pipeline: NamedDependency[MemoryPipeline],
        trigger_integrations: FromQuery[bool] = True,
        language_code: Annotated[str | None, QueryParameter(max_length=16)] = None,
        source: FromQuery[MemorySource | None] = None,
    ) -> CreateMemoryResponse:
        """Create a memory from a finished conversation; 400 when it has neither segments nor photos."""
        if not data.transcript_segments and not data.photos:
            raise ValidationException("a memory needs transcript_segments or photos")
        if data.language is None and language_code:
            data.language = language_code
        if source is not None:
            data.source = source
        memory, messages = await pipeline.create(uid, data, trigger_integrations=trigger_integrations)
        return CreateMemoryResponse(memory=memory, messages=messages)

    @get(
        "",
        responses={
            200: ResponseSpec(
                data_container=list[Memory], description="Memories, newest first", generate_examples=False
            )
        },
        raises=errors(),
    )
    async def list_memories(
        self,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
        include_discarded: FromQuery[bool] = True,
        category: Annotated[str | None, QueryParameter(max_length=32)] = None,
        start_date: FromQuery[datetime | None] = None,
        end_date: FromQuery[datetime | None] = None,
    ) -> Response[bytes]:
        """The caller's memories, newest first; discarded included unless asked, deleted never.

        The store hands back the page already encoded (the Omi app's hottest route).
        """
        query = MemoryQuery(
            limit=limit,
            offset=offset,
            include_discarded=include_discarded,
            category=category,
            start=aware(start_date) if start_date else None,
            end=aware(end_date) if end_date else None,
        )
        return Response(await services.store.list_json(uid, query), media_type=MediaType.JSON)

    @post("/search", status_code=200, raises=errors(body=True))
    async def search_memories(
        self,
        data: JSONBody[SearchRequest],
        uid: NamedDependency[str],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> list[Memory]:
        """The caller's memories ranked by meaning (our addition)."""
        return await pipeline.search(uid, data)

    @get("/{memory_id:str}", raises=errors(lookup=True))
    async def get_memory(
        self, memory_id: MemoryId, uid: NamedDependency[str], services: NamedDependency[Services]
    ) -> Memory:
        return await _owned(services, uid, memory_id)

    @delete("/{memory_id:str}", raises=errors(lookup=True, writes=True))
    async def delete_memory(
        self,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> None:
        """Soft delete; the memory's vector is removed for real."""
        await pipeline.delete(uid, await _owned(services, uid, memory_id))

    @post("/{memory_id:str}/reprocess", status_code=200, raises=errors(lookup=True, writes=True))
    async def reprocess_memory(
        self,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Memory:
        return await pipeline.reprocess(uid, await _owned(services, uid, memory_id))

    @post("/{memory_id:str}/restore", status_code=200, raises=errors(lookup=True, writes=True))
    async def restore_memory(
        self,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Memory:
        """Undo a discard or a delete (our addition)."""
        memory = await services.store.get(uid, memory_id)
        if memory is None:
            raise NotFoundException("memory not found")
        return await pipeline.restore(uid, memory)

    @patch("/{memory_id:str}", raises=errors(lookup=True, body=True, writes=True))
    async def edit_memory(
        self,
        memory_id: MemoryId,
        data: JSONBody[MemoryEdit],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Memory:
        """Change the title and/or overview (our addition)."""
        memory = await _owned(services, uid, memory_id)
        return await pipeline.update(uid, memory, title=data.title, overview=data.overview)

    @patch("/{memory_id:str}/events", raises=errors(lookup=True, body=True, writes=True))
    async def set_events_created(
        self,
        memory_id: MemoryId,
        data: JSONBody[EventsUpdate],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Status:
        """Mark events as added to a calendar: ``events[events_idx[i]].created = values[i]``."""
        memory = await _owned(services, uid, memory_id)
        if len(data.events_idx) != len(data.values):
            raise ValidationException("events_idx and values must have the same length")
        events = memory.structured.events
        if any(not 0 <= i < len(events) for i in data.events_idx):
            raise ValidationException(f"event index out of range (the memory has {len(events)} events)")
        for i, value in zip(data.events_idx, data.values, strict=True):
            events[i].created = value
        await services.store.put(uid, memory)
        return Status(status="Ok")

    @patch("/{memory_id:str}/visibility", raises=errors(lookup=True, writes=True))
    async def set_visibility(
        self,
        memory_id: MemoryId,
        value: FromQuery[Visibility],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Status:
        """Set who may see the memory: ``private``, ``shared`` or ``public`` (anything else is a 400)."""
        memory = await _owned(services, uid, memory_id)
        memory.visibility = value
        await services.store.put(uid, memory)
        return Status(status="Ok")

"""``/memories/{id}``: one memory, and the forms that change it.

The page shows the overview, the action items (each a checkbox form), the events (each with
an ``.ics`` download), what plugins said and the transcript by speaker and time. Editing,
discarding, restoring, deleting and reprocessing go through :class:`MemoryPipeline`, so the
vector index follows. Each form works as a plain post (answered by a redirect back) and,
with htmx, swaps ``memories/_memory.html`` (or one ``_action_item.html``) in place.
A memory that is not the user's, or deleted, is a 404 like any unknown one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import PathParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from app.core.models import Memory, ShortText, Text, TranscriptSegment
from app.core.pipeline import MemoryPipeline
from app.core.services import Services
from app.web.ics import event_calendar, ics_filename
from app.web.rendering import done, is_fragment_request, page

__all__ = ["MemoryPage", "Turn", "turns"]

MemoryId = Annotated[str, PathParameter(max_length=128)]
_ICS_NAME = re.compile(r"^(\d{1,4})\.ics$")
_FRAGMENT = "memories/_memory.html"


class Turn(msgspec.Struct, frozen=True):
    """Consecutive segments of one speaker, shown as one paragraph at its start time."""

    speaker: str
    is_user: bool
    start: float
    text: str


def turns(segments: Sequence[TranscriptSegment]) -> list[Turn]:
    """The transcript as turns: a new one whenever the speaker changes."""
    result: list[Turn] = []
    texts: list[str] = []
    first: TranscriptSegment | None = None
    for segment in segments:
        if first is not None and (segment.speaker_id, segment.is_user) != (first.speaker_id, first.is_user):
            result.append(_turn(first, texts))
            texts = []
            first = None
        if first is None:
            first = segment
        texts.append(segment.text.strip())
    if first is not None:
        result.append(_turn(first, texts))
    return result


def _turn(first: TranscriptSegment, texts: list[str]) -> Turn:
    who = "You" if first.is_user else f"Speaker {first.speaker_id}"
    return Turn(speaker=who, is_user=first.is_user, start=first.start, text=" ".join(t for t in texts if t))


class EditForm(msgspec.Struct):
    title: ShortText = ""
    overview: Text = ""


class ActionItemForm(msgspec.Struct):
    completed: bool = False


async def _owned(services: Services, uid: str, memory_id: str) -> Memory:
    memory = await services.store.get(uid, memory_id)
    if memory is None or memory.deleted:
        raise NotFoundException("There is no such memory.")
    return memory


def _show(request: HTMXRequest, memory: Memory, *, editing: bool = False) -> Template:
    context: dict[str, Any] = {"memory": memory, "editing": editing, "section": "memories"}
    if not is_fragment_request(request):  # the transcript is on the full page only
        context["turns"] = turns(memory.transcript_segments)
    fragment = "memories/_edit.html" if editing else _FRAGMENT
    return page(request, "memories/detail.html", fragment, **context)


class MemoryPage(Controller):
    path = "/memories/{memory_id:str}"

    @get("")
    async def memory(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Template:
        """The memory page, or its ``_memory`` fragment."""
        return _show(request, await _owned(services, uid, memory_id))

    @get("/edit")
    async def edit_form(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Template:
        """The page with the title and overview as a form, or just that form (``_edit``)."""
        return _show(request, await _owned(services, uid, memory_id), editing=True)

    @post("/edit", status_code=200)
    async def edit(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        data: URLEncodedBody[EditForm],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Template | Response[Any]:
        """Save a new title and overview (the memory is indexed again)."""
        title = data.title.strip()
        if not title:
            raise ValidationException("A memory needs a title.")
        memory = await _owned(services, uid, memory_id)
        memory = await pipeline.update(uid, memory, title=title, overview=data.overview.strip())
        return done(request, f"/memories/{memory.id}", _FRAGMENT, memory=memory, editing=False)

    @post("/discard", status_code=200)
    async def discard(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Template | Response[Any]:
        """Keep the memory but leave it out of the list and of search."""
        memory = await pipeline.discard(uid, await _owned(services, uid, memory_id))
        return done(request, f"/memories/{memory.id}", _FRAGMENT, memory=memory, editing=False)

    @post("/restore", status_code=200)
    async def restore(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Template | Response[Any]:
        """Bring a discarded memory back."""
        memory = await pipeline.restore(uid, await _owned(services, uid, memory_id))
        return done(request, f"/memories/{memory.id}", _FRAGMENT, memory=memory, editing=False)

    @post("/reprocess", status_code=200)
    async def reprocess(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Template | Response[Any]:
        """Structure the memory again from its transcript."""
        memory = await pipeline.reprocess(uid, await _owned(services, uid, memory_id))
        return done(request, f"/memories/{memory.id}", _FRAGMENT, memory=memory, editing=False)

    @post("/delete", status_code=200)
    async def delete(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Template | Response[Any]:
        """Delete the memory (its vector goes too) and go back to the list."""
        await pipeline.delete(uid, await _owned(services, uid, memory_id))
        return done(request, "/")

    @post("/action-items/{index:int}", status_code=200)
    async def tick(
        self,
        request: HTMXRequest,
        memory_id: MemoryId,
        index: Annotated[int, PathParameter(ge=0, le=10_000)],
        data: URLEncodedBody[ActionItemForm],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Template | Response[Any]:
        """Tick or untick one action item."""
        memory = await _owned(services, uid, memory_id)
        items = memory.structured.action_items
        if index >= len(items):
            raise NotFoundException("There is no such action item.")
        items[index].completed = data.completed
        await services.store.put(uid, memory)
        return done(
            request,
            f"/memories/{memory.id}#action-items",
            "memories/_action_item.html",
            memory=memory,
            item=items[index],
            index=index,
        )

    @get("/events/{filename:str}")
    async def event_ics(
        self,
        memory_id: MemoryId,
        filename: Annotated[str, PathParameter(max_length=16)],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Response[bytes]:
        """Event ``i`` as ``i.ics``, to add to a calendar."""
        match = _ICS_NAME.match(filename)
        memory = await _owned(services, uid, memory_id)
        events = memory.structured.events
        if match is None or int(match.group(1)) >= len(events):
            raise NotFoundException("There is no such event.")
        index = int(match.group(1))
        event = events[index]
        body = event_calendar(event, f"{memory.id}-{index}@omi-backend")
        return Response(
            body.encode(),
            media_type="text/calendar",  # Litestar adds "; charset=utf-8"
            headers={"Content-Disposition": f'attachment; filename="{ics_filename(event.title)}"'},
        )

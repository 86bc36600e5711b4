"""``/``: the memory list, newest first, with filters in the URL and search by meaning.

The filters (category, date range, show discarded) and the search text live in the query
string, so a page of results can be bookmarked, shared with oneself and paged through
without losing them. An htmx request (the search box as one types, a filter change, a page
link) gets only ``memories/_results.html``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated
from urllib.parse import urlencode

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from app.core.models import CATEGORIES, Memory, SearchRequest
from app.core.pipeline import MemoryPipeline
from app.core.ports import MemoryQuery
from app.core.services import Services
from app.web.rendering import page

__all__ = ["PAGE_SIZE", "SEARCH_LIMIT", "MemoryFilters", "MemoryListPage"]

PAGE_SIZE = 50
SEARCH_LIMIT = 20


class MemoryFilters(msgspec.Struct, frozen=True, kw_only=True):
    """What the list shows, as it appears in the URL."""

    q: str = ""
    category: str = ""
    start: str = ""
    end: str = ""
    discarded: bool = False
    page: int = 1

    def url(self, **changes: object) -> str:
        """``/`` with these filters (and ``changes``) in the query string; defaults left out."""
        current = msgspec.structs.replace(self, **changes) if changes else self
        query = {
            name: ("true" if value is True else value)
            for name, value in msgspec.structs.asdict(current).items()
            if value not in ("", False, None) and not (name == "page" and value == 1)
        }
        return "/?" + urlencode(query) if query else "/"

    @property
    def active(self) -> bool:
        """Whether anything narrows the list."""
        return bool(self.q or self.category or self.start or self.end or self.discarded)

    def window(self) -> tuple[datetime | None, datetime | None]:
        """The date range as datetimes: from the start of ``start`` to the end of ``end`` (UTC)."""
        start = _day(self.start, "start")
        end = _day(self.end, "end")
        return (
            datetime.combine(start, time.min, UTC) if start else None,
            datetime.combine(end, time.max, UTC) if end else None,
        )


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationException(f"{name} must be a date like 2026-11-23, not {value[:40]!r}") from None


async def _find(
    filters: MemoryFilters, uid: str, services: Services, pipeline: MemoryPipeline
) -> tuple[list[Memory], bool]:
    """The memories to show and whether there is a next page."""
    start, end = filters.window()
    category = filters.category or None
    if filters.q.strip():
        request = SearchRequest(query=filters.q.strip(), limit=SEARCH_LIMIT, start_date=start, end_date=end)
        found = await pipeline.search(uid, request)
        return [m for m in found if category is None or m.structured.category == category], False
    query = MemoryQuery(
        limit=PAGE_SIZE + 1,
        offset=(filters.page - 1) * PAGE_SIZE,
        include_discarded=filters.discarded,
        category=category,
        start=start,
        end=end,
    )
    memories = await services.store.list(uid, query)
    return memories[:PAGE_SIZE], len(memories) > PAGE_SIZE


class MemoryListPage(Controller):
    @get("/", name="memories")
    async def memories(
        self,
        request: HTMXRequest,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
        q: Annotated[str, QueryParameter(max_length=500)] = "",
        category: Annotated[str, QueryParameter(max_length=32)] = "",
        start: Annotated[str, QueryParameter(max_length=32)] = "",
        end: Annotated[str, QueryParameter(max_length=32)] = "",
        discarded: FromQuery[bool] = False,
        page_number: Annotated[int, QueryParameter(name="page", ge=1, le=20_000)] = 1,
    ) -> Template:
        """The list (or the search results), full page or the ``_results`` fragment."""
        if category and category not in CATEGORIES:
            raise ValidationException(f"unknown category {category[:32]!r}")
        filters = MemoryFilters(
            q=q, category=category, start=start, end=end, discarded=discarded, page=page_number
        )
        memories, has_next = await _find(filters, uid, services, pipeline)
        return page(
            request,
            "memories/list.html",
            "memories/_results.html",
            section="memories",
            memories=memories,
            filters=filters,
            has_next=has_next,
        )

"""The screenpipe integration: memories from screenpipe's screen and audio text (contract section 6).

``POST /v1/integrations/screenpipe?uid=`` with header ``api_key`` and body
:class:`ScreenpipeCreateMemory` answers the Memory (``source: screenpipe``). The memory's id
is derived from the uid and ``request_id``, so the same request sent twice (a retry) makes
one memory and answers it both times.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody

from app.api.openapi import INTEGRATION_SECURITY, errors
from app.core.models import CreateMemory, Memory, Text
from app.plugins import PluginInfo, hookimpl
from integrations.common import KeyedIntegration, text_segments

__all__ = ["ScreenpipeCreateMemory", "ScreenpipeIntegration", "TimestampRange", "screenpipe_memory_id"]

_NAMESPACE = uuid.UUID("0d6f2a4e-5b1c-4c55-9a57-2f3b8f0c9e11")
_UNIX_MAX = 253402300799  # 9999-12-31T23:59:59Z


class TimestampRange(msgspec.Struct, kw_only=True):
    """When the text was captured, in unix seconds."""

    start: Annotated[int, msgspec.Meta(ge=0, le=_UNIX_MAX)]
    end: Annotated[int, msgspec.Meta(ge=0, le=_UNIX_MAX)]


class ScreenpipeCreateMemory(msgspec.Struct, kw_only=True):
    """Body of ``POST /v1/integrations/screenpipe``.

    Attributes:
        request_id: The caller's id of this request; the same id twice makes one memory.
        source: ``screen`` (one segment) or ``audio`` (split into sentences).
        text: The captured text.
        timestamp_range: When it was captured.
    """

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    source: Literal["screen", "audio"]
    text: Annotated[Text, msgspec.Meta(min_length=1)]
    timestamp_range: TimestampRange


def screenpipe_memory_id(uid: str, request_id: str) -> str:
    """The id of the memory a request makes: the same for the same user and ``request_id``."""
    return uuid.uuid5(_NAMESPACE, f"{uid}\n{request_id}").hex


class ScreenpipeIntegration(KeyedIntegration):
    """Plugin (entry point ``screenpipe``): the screenpipe route, always on."""

    def __init__(self) -> None:
        super().__init__()
        self._locks: dict[str, asyncio.Lock] = {}

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(
            name="Screenpipe",
            author="omi-backend",
            description="Create memories from what screenpipe captures, with your integration key.",
            always_on=True,
        )

    @hookimpl
    def register_routes(self) -> list[Any]:
        integration = self

        @post(
            "/v1/integrations/screenpipe",
            status_code=200,
            guards=[self.guard()],
            security=INTEGRATION_SECURITY,
            raises=errors(body=True, writes=True),
            tags=["integrations"],
        )
        async def create_screenpipe_memory(
            request: Request[Any, Any, Any], data: JSONBody[ScreenpipeCreateMemory]
        ) -> Memory:
            """Create (once per ``request_id``) a memory from screenpipe's text."""
            return await integration.create(integration.caller(request), data)

        return [create_screenpipe_memory]

    async def create(self, uid: str, data: ScreenpipeCreateMemory) -> Memory:
        """Make the memory through the pipeline, or return the one this request made before."""
        span = data.timestamp_range
        if span.end < span.start:
            raise ValidationException("timestamp_range.end is before timestamp_range.start")
        request = CreateMemory(
            started_at=datetime.fromtimestamp(span.start, UTC),
            finished_at=datetime.fromtimestamp(span.end, UTC),
            transcript_segments=text_segments(
                data.text,
                "audio_transcript" if data.source == "audio" else "other_text",
                span.end - span.start,
            ),
            source="screenpipe",
        )
        memory_id = screenpipe_memory_id(uid, data.request_id)
        # The pipeline returns an existing memory for a known id; the lock makes two
        # concurrent copies of one request wait for each other instead of both processing.
        lock = self._locks.setdefault(memory_id, asyncio.Lock())
        try:
            async with lock:
                memory, _ = await self.require_context().create_memory(
                    uid, request, external_data=msgspec.to_builtins(data), memory_id=memory_id
                )
        finally:
            if not lock.locked():
                self._locks.pop(memory_id, None)
        return memory

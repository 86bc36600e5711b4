"""The workflow integration: memories from text sent by automation tools (contract section 6).

``POST /v1/integrations/workflow/memories?uid=`` with header ``api-key`` and body
:class:`WorkflowCreateMemory` answers ``{}``; the memory has ``source: workflow`` and the
request as its ``external_data``. ``GET /v1/integrations/workflow/memories?uid=&limit=1``
(``limit`` 1..12) lists the caller's kept memories, newest first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Router, get, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, QueryParameter

from app.api.openapi import INTEGRATION_SECURITY, errors
from app.core.models import CreateMemory, Geolocation, Memory, Text, aware, utcnow
from app.core.ports import MemoryQuery
from app.plugins import PluginInfo, hookimpl
from integrations.common import KeyedIntegration, text_segments

__all__ = ["WorkflowCreateMemory", "WorkflowIntegration"]

DEFAULT_DURATION = timedelta(seconds=300)


class WorkflowCreateMemory(msgspec.Struct, kw_only=True):
    """Body of ``POST /v1/integrations/workflow/memories``.

    Attributes:
        text: What was said or written.
        text_source: ``audio_transcript`` (split into sentences) or ``other_text`` (one segment).
        started_at: When it started (default: now).
        finished_at: When it ended (default: ``started_at`` + 300 s).
        language: Its language code.
        geolocation: Where it happened.
    """

    text: Annotated[Text, msgspec.Meta(min_length=1)]
    text_source: Literal["audio_transcript", "other_text"] = "audio_transcript"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    language: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    geolocation: Geolocation | None = None


class WorkflowIntegration(KeyedIntegration):
    """Plugin (entry point ``workflow``): the workflow routes, always on."""

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(
            name="Workflow",
            author="omi-backend",
            description="Create memories from text sent by automation tools, with your integration key.",
            always_on=True,
        )

    @hookimpl
    def register_routes(self) -> list[Any]:
        integration = self

        @post("/memories", status_code=200, raises=errors(body=True, writes=True))
        async def create_workflow_memory(
            request: Request[Any, Any, Any], data: JSONBody[WorkflowCreateMemory]
        ) -> dict[str, Any]:
            """Create a memory from text; answers ``{}``."""
            await integration.create(integration.caller(request), data)
            return {}

        @get("/memories", raises=errors())
        async def list_workflow_memories(
            request: Request[Any, Any, Any], limit: Annotated[int, QueryParameter(ge=1, le=12)] = 1
        ) -> list[Memory]:
            """The caller's newest kept memories."""
            store = integration.require_context().store
            return await store.list(
                integration.caller(request), MemoryQuery(limit=limit, include_discarded=False)
            )

        return [
            Router(
                "/v1/integrations/workflow",
                route_handlers=[create_workflow_memory, list_workflow_memories],
                guards=[self.guard()],
                security=INTEGRATION_SECURITY,
                tags=["integrations"],
            )
        ]

    async def create(self, uid: str, data: WorkflowCreateMemory) -> Memory:
        """Make the memory through the pipeline."""
        started = aware(data.started_at) if data.started_at else utcnow()
        finished = aware(data.finished_at) if data.finished_at else started + DEFAULT_DURATION
        if finished < started:
            raise ValidationException("finished_at is before started_at")
        request = CreateMemory(
            started_at=started,
            finished_at=finished,
            transcript_segments=text_segments(
                data.text, data.text_source, (finished - started).total_seconds()
            ),
            geolocation=data.geolocation,
            source="workflow",
            language=data.language,
        )
        memory, _ = await self.require_context().create_memory(
            uid, request, external_data=msgspec.to_builtins(data)
        )
        return memory

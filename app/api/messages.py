"""Chat and plugin messages (contract section 3).

Plugin replies to webhooks land here. ``POST /v1/messages`` stores the person's message and
answers from their memories: the embedded assistant retrieves the closest memories by
meaning and names them (it does not invent prose); with an LLM configured, the model's
answer is used.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from app.api.auth import require_user
from app.api.openapi import USER_SECURITY, errors
from app.core.models import Message, SearchRequest, Text, utcnow
from app.core.pipeline import MemoryPipeline
from app.core.services import Services

__all__ = ["MessagesController"]


class SendMessage(msgspec.Struct):
    text: Annotated[Text, msgspec.Meta(min_length=1)]


class MessagesController(Controller):
    path = "/v1/messages"
    guards = (require_user,)
    security = USER_SECURITY
    tags = ("messages",)

    @get("", raises=errors())
    async def list_messages(
        self,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
    ) -> list[Message]:
        """The caller's messages, newest first."""
        return await services.store.list_messages(uid, limit=limit, offset=offset)

    @post("", status_code=200, raises=errors(body=True, writes=True))
    async def send_message(
        self,
        data: JSONBody[SendMessage],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        pipeline: NamedDependency[MemoryPipeline],
    ) -> Message:
        """Store the person's message and return the assistant's reply (also stored)."""
        question = Message(id=uuid.uuid4().hex, text=data.text, created_at=utcnow(), sender="human")
        await services.store.put_message(uid, question)
        found = await pipeline.search(uid, SearchRequest(query=data.text[:2000], limit=3))
        transcript = "\n".join(f"- {m.structured.title}: {m.structured.overview}" for m in found)
        answer = await services.llm.run_prompt(data.text, transcript) if found else None
        if answer is None:
            answer = (
                "These memories look related: "
                + "; ".join(m.structured.title or "Untitled" for m in found)
                + "."
                if found
                else "I found nothing in your memories about that."
            )
        reply = Message(
            id=uuid.uuid4().hex,
            text=answer,
            created_at=utcnow(),
            sender="ai",
            memories_id=[m.id for m in found],
        )
        await services.store.put_message(uid, reply)
        return reply

"""A second well-behaved plugin, async this time."""

from __future__ import annotations

from app.core.models import Memory, Message
from app.plugins import hookimpl


@hookimpl
async def on_memory_created(uid: str, memory: Memory) -> list[Message]:
    return [Message(id=f"also-{uid}", text=memory.structured.title, created_at=memory.created_at)]

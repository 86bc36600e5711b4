"""A well-behaved plugin: it answers every hook."""

from __future__ import annotations

from app.core.models import Memory, Message, TranscriptSegment
from app.plugins import PluginInfo, TranscriptSession, hookimpl

seen: list[tuple[str, int]] = []


@hookimpl
def on_transcript(session: TranscriptSession, segments: list[TranscriptSegment]) -> None:
    seen.append((session.id, len(segments)))


@hookimpl
def on_memory_created(memory: Memory) -> list[Message]:
    return [Message(id=f"good-{memory.id}", text="Nice talk.", created_at=memory.created_at)]


@hookimpl
def plugin_info() -> PluginInfo:
    return PluginInfo(name="Good", author="Tests", description="Answers every hook.")

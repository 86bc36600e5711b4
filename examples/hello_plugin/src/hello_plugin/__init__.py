"""Hello: an example omi-backend plugin that greets the user after every conversation.

It shows the two hooks most plugins start with: ``plugin_info`` puts the plugin in the
catalogue (where each user enables it), and ``on_memory_created`` answers each new memory
with a message that the Omi app shows with the memory.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.core.models import Memory, Message
from app.plugins import PluginInfo, hookimpl

__all__ = ["HelloPlugin"]


class HelloPlugin:
    """One instance per app: keep any state on ``self``, never in module globals."""

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(
            name="Hello",
            author="omi-backend examples",
            description="Says hello after every conversation.",
            image="https://raw.githubusercontent.com/BasedHardware/Omi/main/plugins/logos/hello.png",
            capabilities=("memories",),
        )

    @hookimpl
    def on_memory_created(self, memory: Memory) -> list[Message]:
        title = memory.structured.title or "your conversation"
        return [
            Message(
                id=f"hello-{memory.id}",
                text=f"Hello! I just read about “{title}”.",
                created_at=datetime.now(UTC),
                memories_id=[memory.id],
            )
        ]

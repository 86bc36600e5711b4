"""A plugin whose hook asks for a parameter the specification does not have."""

from __future__ import annotations

from app.core.models import Memory
from app.plugins import hookimpl


@hookimpl
def on_memory_created(memory: Memory, mood: str) -> None:
    """``mood`` is not a parameter of the hook."""

"""What a plugin gets from the server at start-up: the public plugin API beyond the hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.config import Settings
from app.core.models import CreateMemory, Memory, Message
from app.core.ports import BlobStore, KeyValue, LanguageModel, MemoryStore

__all__ = ["MemoryCreator", "PluginContext"]


class MemoryCreator(Protocol):
    """Create a memory through the normal pipeline (what integrations use)."""

    def __call__(
        self,
        uid: str,
        request: CreateMemory,
        *,
        external_data: dict[str, Any] | None = None,
        trigger_integrations: bool = True,
        memory_id: str | None = None,
    ) -> Awaitable[tuple[Memory, list[Message]]]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginContext:
    """Handed to every plugin's ``on_startup``; a plugin keeps it for its later hooks.

    Attributes:
        settings: The server's settings.
        kv: Shared key-value state (plugin state, queues, logs); values are JSON strings.
        store: The memory store (memories and messages of every user).
        blobs: The blob store.
        llm: The language model (``run_prompt`` returns ``None`` when it cannot answer).
        create_memory: Make a memory through the pipeline, exactly as ``POST /v1/memories``.
        is_enabled: ``await is_enabled(plugin_id, uid)``: whether a user enabled a plugin.
        extras: Services later parts of the server add (the catalogue, for instance), by name.
    """

    settings: Settings
    kv: KeyValue
    store: MemoryStore
    blobs: BlobStore
    llm: LanguageModel
    create_memory: MemoryCreator
    is_enabled: Callable[[str, str], Awaitable[bool]]
    extras: dict[str, Any]

"""The plugin catalogue on the wire: ``Plugin`` and ``PluginReview`` (contract section 2).

A catalogue entry has the shape of an entry of Omi's ``community-plugins.json`` plus the
caller's state (``enabled``, ``user_review``) and the ratings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.core.models import aware
from app.plugins.types import Capability

__all__ = ["CAPABILITIES", "ExternalIntegration", "Plugin", "PluginReview", "TriggersOn"]

CAPABILITIES: tuple[str, ...] = Capability.__args__  # type: ignore[attr-defined]
"""Every capability a catalogue entry may declare."""

TriggersOn = Literal["memory_creation", "transcript_processed"]
"""When an external plugin server is called: after a memory is made, or after each final transcript."""

Url = Annotated[str, msgspec.Meta(max_length=2_048)]


class ExternalIntegration(msgspec.Struct, kw_only=True, frozen=True):
    """How the server calls an external plugin server.

    Attributes:
        triggers_on: ``memory_creation`` or ``transcript_processed``.
        webhook_url: Where the payloads are posted (``?uid=`` is added).
        setup_completed_url: ``GET {url}?uid=`` answers ``{"is_setup_completed": bool}``;
            enabling the plugin is refused until it says ``true``.
        setup_instructions_file_path: What the user must do before enabling it.
    """

    triggers_on: TriggersOn
    webhook_url: Url
    setup_completed_url: Url | None = None
    setup_instructions_file_path: Url = ""


class PluginReview(msgspec.Struct, kw_only=True, frozen=True):
    """One user's review of a plugin (one per user and plugin; a new one replaces the old).

    Attributes:
        uid: Who wrote it (``"anonymous"`` in listings, except for the caller's own).
        rated_at: When.
        score: 1 to 5.
        review: The text, possibly empty.
    """

    uid: str
    rated_at: datetime
    score: Annotated[float, msgspec.Meta(ge=1, le=5)]
    review: str = ""

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "rated_at", aware(self.rated_at))


class Plugin(msgspec.Struct, kw_only=True, frozen=True):
    """A catalogue entry as ``GET /v1/plugins`` returns it.

    The first ten fields describe the plugin (from Omi-format JSON, or from an installed
    plugin's ``plugin_info``); ``reviews``, ``user_review``, ``rating_avg``, ``rating_count``
    and ``enabled`` are filled in for the caller.
    """

    id: str
    name: str
    author: str = ""
    description: str = ""
    image: str = ""
    capabilities: list[Capability] = msgspec.field(default_factory=list)
    memory_prompt: str | None = None
    chat_prompt: str | None = None
    external_integration: ExternalIntegration | None = None
    reviews: list[PluginReview] = msgspec.field(default_factory=list)
    user_review: PluginReview | None = None
    rating_avg: float | None = None
    rating_count: int = 0
    enabled: bool = False
    deleted: bool = False

    def has(self, capability: Capability) -> bool:
        """Whether the entry declares ``capability``."""
        return capability in self.capabilities

"""Data types that cross the boundary between the server and its plugins."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Capability", "PluginInfo", "TranscriptSession"]

Capability = Literal["memories", "chat", "external_integration"]
"""What a plugin does, as the Omi app's plugin catalogue names it."""


class TranscriptSession(msgspec.Struct, frozen=True, kw_only=True):
    """A live transcription session as plugins see it.

    Attributes:
        id: The session's id, stable for the life of one WebSocket connection.
        uid: The id of the user who is speaking.
    """

    id: str
    uid: str


class PluginInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A plugin's entry in the plugin catalogue.

    Attributes:
        id: The plugin's id in the catalogue. It must be the name the plugin is registered
            under (its entry-point name); left empty, the host fills that name in.
        name: The name shown to users.
        author: Who wrote the plugin.
        description: One or two sentences on what it does.
        image: URL (or path under the server's static files) of its icon.
        capabilities: What it does, in the Omi app's terms.
        always_on: Run for every user, without the user enabling it.
    """

    id: str = ""
    name: str
    author: str = ""
    description: str = ""
    image: str = ""
    capabilities: tuple[Capability, ...] = ()
    always_on: bool = False

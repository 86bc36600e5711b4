"""The public plugin API: what a plugin package imports.

A plugin writes ``from app.plugins import hookimpl`` and marks functions named like the hooks
in :mod:`app.plugins.hookspecs`; see ``docs/plugins.md``.
"""

from __future__ import annotations

from app.plugins.catalogue import Catalogue
from app.plugins.context import PluginContext
from app.plugins.markers import PROJECT, hookimpl
from app.plugins.models import ExternalIntegration, Plugin, PluginReview
from app.plugins.types import Capability, PluginInfo, TranscriptSession

__all__ = [
    "PROJECT",
    "Capability",
    "Catalogue",
    "ExternalIntegration",
    "Plugin",
    "PluginContext",
    "PluginInfo",
    "PluginReview",
    "TranscriptSession",
    "hookimpl",
]

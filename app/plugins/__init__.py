"""The public plugin API: what a plugin package imports.

A plugin writes ``from app.plugins import hookimpl`` and marks functions named like the hooks
in :mod:`app.plugins.hookspecs`; see ``docs/plugins.md``. A plugin's web pages answer with
:func:`page` (a page, or its fragment for htmx) and :func:`done` (after a form post).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.plugins.catalogue import Catalogue
from app.plugins.context import PluginContext
from app.plugins.markers import PROJECT, hookimpl
from app.plugins.models import ExternalIntegration, Plugin, PluginReview
from app.plugins.types import Capability, PluginInfo, TranscriptSession

if TYPE_CHECKING:
    from app.web.rendering import done, page

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
    "done",
    "hookimpl",
    "page",
]


def __getattr__(name: str) -> object:
    """``page`` and ``done``, imported when first asked for: the web pages import the plugin
    machinery, so importing them here up front would be circular."""
    if name in ("done", "page"):
        from app.web import rendering

        return getattr(rendering, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

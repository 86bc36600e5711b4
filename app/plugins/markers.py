"""The one name of the plugin system and its pluggy markers.

The pluggy project name, the marker name and the entry-point group are the same string,
``omi_backend``, so a plugin package declares itself under ``[project.entry-points.omi_backend]``
and marks its hooks with :data:`hookimpl`.
"""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "omi_backend"
"""The pluggy project name, which is also the entry-point group plugins are found under."""

hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks a hook specification in :mod:`app.plugins.hookspecs`."""

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's implementation of a hook: ``@hookimpl`` above a function named like the hook."""

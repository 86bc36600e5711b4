"""A plugin that fails on import."""

from __future__ import annotations

raise RuntimeError("broken plugin cannot be imported")

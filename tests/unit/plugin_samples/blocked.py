"""A plugin that must never be imported: the tests block it."""

from __future__ import annotations

raise AssertionError("a blocked plugin was imported")

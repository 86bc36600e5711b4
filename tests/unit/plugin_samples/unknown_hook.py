"""A plugin that implements a hook the server does not have."""

from __future__ import annotations

from app.plugins import hookimpl


@hookimpl
def on_something_else() -> None:
    """Not a hook of ours."""

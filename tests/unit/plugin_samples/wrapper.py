"""A plugin with a hook wrapper, which the host does not support."""

from __future__ import annotations

from collections.abc import Generator

from app.plugins import hookimpl


@hookimpl(wrapper=True)
def on_transcript() -> Generator[None, None, None]:
    yield

"""What the operations tests share: memories to store, the CLI run off the event loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from app.cli import main
from app.config import _ENV_NAMES
from app.core.models import Memory, Structured
from tests.production import Production

__all__ = ["T0", "cli", "make_memory", "production_env", "use_env"]

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def make_memory(
    memory_id: str, n: int = 0, *, deleted: bool = False, discarded: bool = False, title: str = ""
) -> Memory:
    at = T0 + timedelta(minutes=n)
    return Memory(
        id=memory_id,
        created_at=at,
        started_at=at - timedelta(minutes=5),
        finished_at=at,
        structured=Structured(title=title or f"Memory {memory_id}", overview=f"About {memory_id} and more."),
        deleted=deleted,
        discarded=discarded,
    )


async def cli(*argv: str) -> int:
    """``omi-backend ARGV`` in a worker thread (it runs its own event loop); the exit status."""
    return await anyio.to_thread.run_sync(main, list(argv))


def use_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, values: dict[str, str]) -> None:
    """Run the CLI in ``tmp_path`` (no stray ``.env``) with exactly these settings variables."""
    monkeypatch.chdir(tmp_path)
    for name in _ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def production_env(production: Production, data_dir: Path, **changes: str) -> dict[str, str]:
    return production.env(OMI_DATA_DIR=str(data_dir), **changes)

"""A real ``omi-backend serve`` process on a temporary data dir, for crash and fault tests.

:func:`server` starts it on a free loopback port (extra environment variables select backends
or settings), :func:`wait_healthy` polls ``/health`` and :func:`make_token` creates a user's
token straight in the embedded key-value store before the server starts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.backends.sqlite_kv import SQLiteKeyValue
from app.core.tokens import TokenService

__all__ = ["free_port", "make_token", "omi_backend", "server", "tail", "wait_healthy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def omi_backend() -> list[str]:
    script = Path(sys.executable).parent / "omi-backend"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


@contextmanager
def server(
    data_dir: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run the server (``omi-backend``, or ``command``) with ``serve`` until the context
    ends; yields the process and its ``host:port``."""
    port = free_port()
    environ = {
        **os.environ,
        "OMI_DATA_DIR": str(data_dir),
        "OMI_HOST": "127.0.0.1",
        "OMI_PORT": str(port),
        **(env or {}),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*(command or omi_backend()), "serve"], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc, f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def wait_healthy(address: str, proc: subprocess.Popen[bytes], log: Path, within: float = 90) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, tail(log)
            try:
                if (await client.get(f"http://{address}/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(tail(log))


async def make_token(data_dir: Path, uid: str) -> str:
    kv = SQLiteKeyValue(data_dir / "kv.db")
    try:
        return await TokenService(kv).create(uid)
    finally:
        await kv.close()

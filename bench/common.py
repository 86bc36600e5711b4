"""Helpers shared by the benchmark scripts: a server in a subprocess, tokens, percentiles."""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_token(data_dir: Path, uid: str) -> str:
    from app.backends.sqlite_kv import SQLiteKeyValue
    from app.core.tokens import TokenService

    async def create() -> str:
        kv = SQLiteKeyValue(data_dir / "kv.db")
        try:
            return await TokenService(kv).create(uid)
        finally:
            await kv.close()

    return asyncio.run(create())


@contextmanager
def server(data_dir: Path, **env: str) -> Iterator[str]:
    """Run bench/server.py on a free port; yields its base URL."""
    port = free_port()
    environ = {**os.environ, "OMI_DATA_DIR": str(data_dir), "OMI_PORT": str(port), **env}
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "server.py")], env=environ, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, attempts=300)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_until_up(url: str, attempts: int = 300) -> None:
    """Poll ``{url}/health`` every 0.1 s until it answers 200, or raise."""
    for _ in range(attempts):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the benchmark server did not start")


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples_ms, n=100)
    return {"p50": statistics.median(samples_ms), "p90": q[89], "p99": q[98], "n": len(samples_ms)}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"

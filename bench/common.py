"""Helpers shared by the benchmark scripts: a server in a subprocess, tokens, percentiles."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"  # the JSON files bench/plots.py reads


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_token(data_dir: Path, uid: str) -> str:
    return make_tokens(data_dir, [uid])[0]


def make_tokens(data_dir: Path, uids: list[str]) -> list[str]:
    """One API token per uid, written to the data directory's KeyValue before the server starts."""
    from app.backends.sqlite_kv import SQLiteKeyValue
    from app.core.tokens import TokenService

    async def create() -> list[str]:
        kv = SQLiteKeyValue(data_dir / "kv.db")
        try:
            service = TokenService(kv)
            return [await service.create(uid) for uid in uids]
        finally:
            await kv.close()

    return asyncio.run(create())


@contextmanager
def server(
    data_dir: Path,
    script: str = "server.py",
    *,
    cpu: int | None = None,
    quiet: bool = False,
    start_attempts: int = 300,
    stop_timeout: float = 30,
    env: Mapping[str, str] | None = None,
    **more_env: str,
) -> Iterator[str]:
    """Run ``bench/<script>`` on a free port until the context ends; yields its base URL.

    ``env`` and keyword arguments are environment variables for it; ``cpu`` pins it to one
    core (with ``taskset``, where present); ``quiet`` drops its stdout; a server that does
    not stop within ``stop_timeout`` seconds is killed.
    """
    port = free_port()
    environ = {
        **os.environ,
        "OMI_DATA_DIR": str(data_dir),
        "OMI_PORT": str(port),
        **(env or {}),
        **more_env,
    }
    command = [sys.executable, str(ROOT / "bench" / script)]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    stdout = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(command, env=environ, cwd=ROOT, stdout=stdout)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, attempts=start_attempts)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


def run_info() -> dict[str, Any]:
    """Machine and date of a run, for the JSON results (bench/plots.py puts them in titles)."""
    return {
        "machine": machine().rsplit(", ", 1)[0],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` (with the load average at the end of the run)."""
    result.setdefault("run", run_info())["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}", file=sys.stderr)

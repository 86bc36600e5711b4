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


class Spawned:
    """``bench/<script>`` in a subprocess on a free port (the embedded defaults in
    ``data_dir``): ``url``, ``proc``, and :meth:`stop`.

    ``env`` adds environment variables; ``cpu`` pins it to one core (with ``taskset``, where
    present); its output goes to ``log`` if given, else nowhere with ``quiet``, else to ours.
    """

    def __init__(
        self,
        data_dir: Path,
        script: str = "server.py",
        *,
        cpu: int | None = None,
        quiet: bool = False,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        environ = {**os.environ, "OMI_DATA_DIR": str(data_dir), "OMI_PORT": str(port), **(env or {})}
        command = [sys.executable, str(ROOT / "bench" / script)]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        if log is not None:
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    command, env=environ, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
                )
        else:
            stdout = subprocess.DEVNULL if quiet else None
            self.proc = subprocess.Popen(command, env=environ, cwd=ROOT, stdout=stdout)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, then wait up to ``timeout`` seconds (a listen server makes the memories of
        its last sessions); the exit code, or ``None``: killed."""
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


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
) -> Iterator[str]:
    """:class:`Spawned` until the context ends; yields its base URL once it answers."""
    spawned = Spawned(data_dir, script, cpu=cpu, quiet=quiet, env=env)
    try:
        wait_until_up(spawned.url, attempts=start_attempts)
        yield spawned.url
    finally:
        spawned.stop(stop_timeout)


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

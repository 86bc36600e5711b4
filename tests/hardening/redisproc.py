"""A private ``redis-server`` for fault tests: its own port and directory, stopped and started at will.

The shared Redis on 6379 is never touched. :class:`PrivateRedis` runs ``redis-server`` with
the persistence ``docs/deploy.md`` asks of production: an append-only file fsynced before
every reply (``--appendonly yes --appendfsync always``), so whatever a client was told is
written survives even a SIGKILL (``everysec`` would survive a killed process too, since the
data is already in the kernel's page cache; ``always`` also survives a crash of the host,
which a test cannot stage). :meth:`PrivateRedis.stop` kills it (SIGKILL by default, or a
SIGTERM shutdown) and :meth:`PrivateRedis.start` starts it again on the same port and
directory, where it reloads the AOF.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.serverproc import free_port

__all__ = ["PrivateRedis", "private_redis"]


class PrivateRedis:
    """One ``redis-server`` process at a time on ``port``, persisting to ``directory``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def start(self, within: float = 20.0) -> None:
        """Start the server and wait until it answers (the AOF loaded)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        command = [
            "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + within
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-2000:] if self.log.exists() else ""
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:  # refused, or still loading the AOF
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, how: signal.Signals = signal.SIGKILL) -> None:
        """Stop the server: SIGKILL (a crash) or SIGTERM (a clean shutdown); wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(how)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextmanager
def private_redis(directory: Path) -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis`, killed when the context ends."""
    server = PrivateRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()

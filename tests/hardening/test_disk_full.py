"""A full disk under the embedded stores: clear refusals, nothing half-written, and recovery.

``omi-backend serve`` runs in a subprocess whose data dir is on a small tmpfs. With the
disk filled by a filler file, every kind of write (a memory, an edit, a web action, a live
session, a speech-profile upload) is refused with a 507 (the live session with close code
1013), each saying the disk is full; the server stays up and reads go on working. Once the
filler is deleted, the same server takes writes again, no memory is half-written and every
SQLite file passes ``PRAGMA integrity_check``.

Where a tmpfs cannot be mounted (not root), the server's file-size limit (``RLIMIT_FSIZE``,
set with ``prlimit`` on the running process) stands in for the full disk: writes past the
end of a file then fail with ``EFBIG``, as a full disk fails them with ``ENOSPC``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import resource
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.backends import diskspace
from app.backends.sqlite_kv import SQLiteKeyValue
from app.core.errors import StorageFull
from tests.api.listen_support import clip, encode
from tests.api.test_speech_profile import wav
from tests.serverproc import make_token, server, tail, wait_healthy
from tests.web.conftest import post_form, sign_in

pytestmark = pytest.mark.anyio

FULL = "disk is full"
MEMORY = {
    "started_at": "2026-11-23T09:00:00Z",
    "finished_at": "2026-11-23T09:01:00Z",
    "transcript_segments": [{"text": "Remind me to renew the car insurance before the end of the month."}],
}


class Disk:
    """The data dir's disk: a 16 MiB tmpfs filled by a file, or (not root) a file-size limit."""

    def __init__(self, root: Path, size: str = "16m") -> None:
        self.root = root
        self.size = size
        self.filler = root / "filler"
        self.mounted = False
        self.pid: int | None = None

    @contextmanager
    def mount(self) -> Iterator[Disk]:
        self.root.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.root)]
        done = subprocess.run(command, capture_output=True, check=False)
        self.mounted = done.returncode == 0
        try:
            yield self
        finally:
            if self.mounted:
                subprocess.run(["umount", str(self.root)], check=False)
                if os.path.ismount(self.root):
                    subprocess.run(["umount", "-l", str(self.root)], check=True)

    def fill(self) -> None:
        if not self.mounted:
            assert self.pid is not None
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            return
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT)
        try:
            size = 1 << 20
            while size:
                try:
                    os.write(fd, bytes(size))
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    size //= 2
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.root).free < 4096

    def cap(self) -> None:
        """Make the disk (nearly) full of what is written next: the tmpfs as mounted, or a
        256 KiB file-size limit on this process."""
        if not self.mounted:
            resource.prlimit(os.getpid(), resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    def grow(self) -> None:
        """Room again: the tmpfs remounted four times larger, or the limit lifted."""
        if self.mounted:
            options = f"remount,size={4 * int(self.size.rstrip('m'))}m"
            subprocess.run(["mount", "-o", options, str(self.root)], check=True)
        else:
            unlimited = resource.RLIM_INFINITY
            resource.prlimit(os.getpid(), resource.RLIMIT_FSIZE, (unlimited, unlimited))

    def free(self) -> None:
        if not self.mounted:
            assert self.pid is not None
            unlimited = resource.RLIM_INFINITY
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
            return
        self.filler.unlink()


def refused(response: httpx.Response) -> bool:
    """A 507 that says the disk is full, as JSON (the API) or text (an htmx web action)."""
    if response.status_code != 507:
        return False
    if response.headers["content-type"].startswith("application/json"):
        return FULL in response.json()["detail"]
    return FULL in response.text


async def listen(address: str, auth: dict[str, str]) -> tuple[list[dict[str, Any]], ConnectionClosed | None]:
    """Stream a clip (four times real time) until the first words come back or the server
    closes; the words, and the close (``None`` if the client closed)."""
    frames, pace = encode(clip("standup"), "pcm16")
    url = f"ws://{address}/listen?codec=pcm16&sample_rate=16000&language=en&uid=alice"
    words: list[dict[str, Any]] = []
    async with connect(url, additional_headers=auth) as ws:

        async def send() -> None:
            for frame in frames:
                await ws.send(frame)
                await asyncio.sleep(pace / 4)

        sender = asyncio.create_task(send())
        try:
            async with asyncio.timeout(60):
                while not words:
                    message = json.loads(await ws.recv())
                    if isinstance(message, list):
                        words.extend(message)
        except ConnectionClosed as closed:
            return words, closed
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return words, None


def integrity(data_dir: Path) -> dict[str, str]:
    found = {}
    for path in sorted(data_dir.glob("*.db")):
        with closing(sqlite3.connect(path)) as conn:
            found[path.name] = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return found


@pytest.mark.slow
async def test_a_full_disk_is_refused_cleanly_and_then_works_without_a_restart(tmp_path: Path) -> None:
    disk = Disk(tmp_path / "disk")
    with disk.mount():
        data_dir, log = disk.root / "data", tmp_path / "server.log"
        token = await make_token(data_dir, "alice")
        auth = {"Authorization": f"Bearer {token}"}
        with server(data_dir, log) as (proc, address):
            disk.pid = proc.pid
            await wait_healthy(address, proc, log)
            base = f"http://{address}"
            async with (
                httpx.AsyncClient(base_url=base, timeout=60) as api,
                httpx.AsyncClient(base_url=base) as web,
            ):
                made = [await api.post("/v1/memories", json=MEMORY, headers=auth) for _ in "ab"]
                kept = [response.json()["memory"] for response in made]
                assert (await sign_in(web, token)).status_code == 303
                first = kept[0]["id"]
                edit = {"title": "Insurance", "overview": "Renew it."}

                disk.fill()
                assert refused(await api.post("/v1/memories", json=MEMORY, headers=auth))
                assert refused(await api.patch(f"/v1/memories/{first}", json={"title": "x"}, headers=auth))
                assert refused(await post_form(web, f"/memories/{first}/edit", edit, htmx=True))
                async with httpx.AsyncClient(base_url=base) as newcomer:  # a sign-in: its session
                    signing_in = await sign_in(newcomer, token)  # cannot be kept
                    assert signing_in.status_code == 507 and "set-cookie" not in signing_in.headers
                files = {"file": ("profile.wav", wav(10), "audio/wav")}
                assert refused(await api.post("/v3/upload-audio", files=files, headers=auth))
                words, closed = await listen(address, auth)
                assert closed is not None and closed.rcvd is not None, "the session was closed by the server"
                assert (closed.rcvd.code, FULL in closed.rcvd.reason) == (1013, True), closed.rcvd
                assert words == []  # nothing was shown that was not journalled
                # still up, and what was kept reads as it was
                assert proc.poll() is None, tail(log)
                listed = (await api.get("/v1/memories", headers=auth)).json()
                assert sorted(m["id"] for m in listed) == sorted(m["id"] for m in kept)
                assert (await api.get(f"/v1/memories/{first}", headers=auth)).json() == kept[0]
                assert (await web.get(f"/memories/{first}")).status_code == 200

                disk.free()  # no restart from here on
                again = await api.post("/v1/memories", json=MEMORY, headers=auth)
                assert again.status_code == 200, again.text
                kept.append(again.json()["memory"])
                patched = await api.patch(f"/v1/memories/{first}", json={"title": "Car"}, headers=auth)
                assert patched.status_code == 200 and patched.json()["structured"]["title"] == "Car"
                assert (await post_form(web, f"/memories/{first}/edit", edit, htmx=True)).status_code == 200
                async with httpx.AsyncClient(base_url=base) as newcomer:
                    assert (await sign_in(newcomer, token)).status_code == 303
                assert (await api.post("/v3/upload-audio", files=files, headers=auth)).status_code == 200
                assert (await api.get("/v3/speech-profile", headers=auth)).json() == {"has_profile": True}
                search = {"query": "car insurance renewal", "limit": 10}
                found = (await api.post("/v1/memories/search", json=search, headers=auth)).json()
                assert {m["id"] for m in found} == {m["id"] for m in kept}
                edited = (await api.get(f"/v1/memories/{first}", headers=auth)).json()
                assert edited["structured"]["title"] == "Insurance"
        assert "Traceback" not in log.read_text()
        assert integrity(data_dir) == dict.fromkeys(["kv.db", "memories.db", "vectors.db"], "ok")
        with closing(sqlite3.connect(data_dir / "memories.db")) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM memories")}
        with closing(sqlite3.connect(data_dir / "vectors.db")) as conn:
            indexed = {row[0] for row in conn.execute("SELECT memory_id FROM vectors")}
        with closing(sqlite3.connect(data_dir / "kv.db")) as conn:
            owed = conn.execute("SELECT key, field FROM hashes WHERE key LIKE '%pending'").fetchall()
        assert stored == indexed == {m["id"] for m in kept}  # no memory half-made
        assert owed == []
        assert list((data_dir / "blobs").rglob("*.tmp")) == []


async def test_sqlite_that_meets_the_full_disk_itself_refuses_cleanly_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the reserve, SQLite's own "database or disk is full" (or, under a file-size
    limit, its write I/O error) is a StorageFull; the connection is left usable, earlier
    writes stay readable, and writes work again once there is room."""
    monkeypatch.setattr(diskspace, "RESERVE_BYTES", 0)
    disk = Disk(tmp_path / "disk", size="1m")
    with disk.mount():
        kv = SQLiteKeyValue(disk.root / "kv.db")
        value = "x" * 3000

        async def fill() -> int:
            for written in range(10_000):
                try:
                    await kv.set(f"k{written}", value)
                except StorageFull:
                    return written
            raise AssertionError("the disk never filled")

        try:
            disk.cap()
            try:
                written = await fill()
                assert written > 10
                assert await kv.get("k0") == value  # reads go on
                with pytest.raises(StorageFull):
                    await kv.set("still", value)
            finally:
                disk.grow()
            await kv.set("after", value)  # the same connection, without a restart
            assert [await kv.get(f"k{i}") for i in range(written)] == [value] * written
            assert await kv.get(f"k{written}") is None  # the refused write left nothing
        finally:
            await kv.close()
        assert integrity(disk.root) == {"kv.db": "ok"}

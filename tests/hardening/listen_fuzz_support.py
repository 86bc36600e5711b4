"""Tools to attack ``/listen`` on a real server: raw WebSocket frames, an Opus oracle, a good client.

- :class:`Served`: an ``omi-backend serve`` process with what the tests read from it: its
  open file descriptors and memory (``/proc``), its log, and the journals in its data dir.
- :class:`RawClient`: a WebSocket client on a bare socket, for what ``websockets`` would not
  send (truncated frames, resets, oversize headers) and for a client that stops reading.
- :func:`opus_valid`: the framing rules of an Opus packet (RFC 6716 section 3.4, R1-R7),
  written from the RFC, the oracle for what the server must refuse as undecodable.
- :class:`GoodSession`: a well-behaved client, in a thread with its own event loop, streaming
  a part of a corpus clip and then silence at real-time pace while the attacks go on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.listen_support import CORPUS, clip, encode, silence
from tests.wer import wer

__all__ = [
    "BINARY",
    "CLOSE",
    "PING",
    "PONG",
    "TEXT",
    "GoodSession",
    "RawClient",
    "Served",
    "memory_text",
    "opus_valid",
    "until",
    "ws_frame",
]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_WER = 0.25  # as tests/api/test_listen.py, for 16 kHz audio


# -- the server --------------------------------------------------------------------------------


@dataclass
class Served:
    """A running server: where it is, its tokens, and what ``/proc`` and its files say."""

    proc: subprocess.Popen[bytes]
    address: str
    log: Path
    data_dir: Path
    tokens: dict[str, str]
    heap_report: Path | None = None  # where a server run by tests/hardening/heapprobe.py reports

    async def heap(self) -> dict[str, Any]:
        """The server's Python heap after a collection: ``blocks`` and ``objects`` by type."""
        assert self.heap_report is not None, "the server was not started by tests.hardening.heapprobe"
        self.heap_report.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        await until(self.heap_report.exists, within=30)
        report: dict[str, Any] = json.loads(self.heap_report.read_text())
        return report

    def auth(self, uid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[uid]}"}

    def path(self, codec: str = "pcm16", **extra: str) -> str:
        rate = "8000" if codec == "pcm8" else "16000"
        query = "&".join(
            f"{k}={v}" for k, v in {"codec": codec, "sample_rate": rate, "language": "en", **extra}.items()
        )
        return f"/listen?{query}"

    def url(self, codec: str = "pcm16", **extra: str) -> str:
        return f"ws://{self.address}{self.path(codec, **extra)}"

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def memory_kib(self, field_name: str = "VmRSS") -> int:
        """``VmRSS`` (resident now) or ``VmHWM`` (the peak so far) of the server, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
        raise LookupError(field_name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def live_sessions(self) -> int | None:
        """The live-session count of the last session end logged (``None`` before any)."""
        counts = re.findall(r"listen: session \S+ of \S+ ended: .*; (\d+) live", self.log_text())
        return int(counts[-1]) if counts else None

    def ends(self, uid: str) -> list[str]:
        """How each logged session of ``uid`` ended."""
        return re.findall(rf"listen: session \S+ of {re.escape(uid)} ended: (.*); \d+ live", self.log_text())

    def open_journals(self) -> tuple[int, int]:
        """Open processing memories and journal lists in the key-value store."""
        with sqlite3.connect(f"file:{self.data_dir / 'kv.db'}?mode=ro", uri=True) as db:
            opened = db.execute("SELECT count(*) FROM hashes WHERE key = 'listen:open'").fetchone()[0]
            lists = db.execute(
                "SELECT count(DISTINCT key) FROM lists WHERE key LIKE 'listen:journal:%'"
            ).fetchone()
        return int(opened), int(lists[0])

    def journalled(self, uid: str) -> int:
        """Results journalled for the open processing memories of ``uid``."""
        with sqlite3.connect(f"file:{self.data_dir / 'kv.db'}?mode=ro", uri=True) as db:
            pattern = f"listen:journal:{uid}:%"
            return int(db.execute("SELECT count(*) FROM lists WHERE key LIKE ?", (pattern,)).fetchone()[0])

    async def memories(self, uid: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"http://{self.address}/v1/memories", headers=self.auth(uid), timeout=30
            )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def memory_of(self, uid: str, within: float = 120.0) -> dict[str, Any]:
        """The one memory of ``uid``, once it exists."""
        deadline = time.monotonic() + within
        while not (found := await self.memories(uid)):
            assert time.monotonic() < deadline, f"no memory of {uid} after {within} s"
            await asyncio.sleep(0.25)
        (memory,) = found
        return memory

    async def logged(self, text: str, within: float = 60.0) -> None:
        """Wait until a line of the log holds ``text``."""
        deadline = time.monotonic() + within
        while text not in self.log_text():
            assert time.monotonic() < deadline, f"{text!r} not logged in {within} s"
            await asyncio.sleep(0.1)

    async def ended(self, uid: str, count: int = 1, within: float = 60.0) -> list[str]:
        """How the sessions of ``uid`` ended, once ``count`` of them have."""
        deadline = time.monotonic() + within
        while len(ends := self.ends(uid)) < count:
            assert time.monotonic() < deadline, f"{len(ends)} sessions of {uid} ended"
            await asyncio.sleep(0.1)
        return ends

    async def quiet(self, within: float = 120.0) -> None:
        """Wait until no session is live and no journal is open (every session has ended)."""
        deadline = time.monotonic() + within
        while self.live_sessions() != 0 or self.open_journals() != (0, 0):
            assert time.monotonic() < deadline, (self.live_sessions(), self.open_journals())
            await asyncio.sleep(0.25)


async def until(condition: Callable[[], bool], within: float) -> None:
    """Wait until ``condition()`` holds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not so after {within} s"
        await asyncio.sleep(0.1)


def memory_text(memory: dict[str, Any]) -> str:
    return " ".join(s["text"] for s in memory["transcript_segments"])


# -- raw WebSocket frames ----------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` declares another payload length than the one sent."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if declared < 126:
        head += bytes([0x80 | declared])
    elif declared < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", declared)
    key = os.urandom(4)
    data = np.frombuffer(payload, dtype=np.uint8)
    mask = np.resize(np.frombuffer(key, dtype=np.uint8), data.size)
    return head + key + (data ^ mask).tobytes()


def handshake(address: str, path: str, headers: dict[str, str]) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {address}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """One WebSocket connection on a bare socket: frames are written exactly as given."""

    def __init__(
        self, sock: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sock = sock
        self.reader = reader
        self.writer = writer
        self.frames: list[tuple[int, bytes]] = []  # what the server sent, in order

    @classmethod
    async def open(cls, address: str, rcvbuf: int | None = None) -> RawClient:
        host, port = address.split(":")
        sock = socket.socket()
        if rcvbuf is not None:  # before connecting: the window the server sees
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 21)
        return cls(sock, reader, writer)

    @classmethod
    async def connect(
        cls, address: str, path: str, headers: dict[str, str], rcvbuf: int | None = None
    ) -> RawClient:
        """Open and complete the handshake (the server's answer must be 101)."""
        client = await cls.open(address, rcvbuf)
        await client.send(handshake(address, path, headers))
        async with asyncio.timeout(30):
            head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        frame = first & 0x0F, await self.reader.readexactly(length)
        self.frames.append(frame)
        return frame

    async def close_frame(self, within: float = 30.0) -> tuple[int, str]:
        """Read until the server's close frame: its code and reason."""
        async with asyncio.timeout(within):
            while True:
                opcode, data = await self.next_frame()
                if opcode == CLOSE:
                    assert len(data) >= 2, data
                    return struct.unpack("!H", data[:2])[0], data[2:].decode()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (no close frame, no FIN)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.transport.abort()


# -- Opus framing (RFC 6716 section 3.4) --------------------------------------------------------


def _frame_length(packet: bytes, at: int) -> tuple[int, int] | None:
    """A frame length coded at ``at`` (one byte, or two from 252 up) and where it ends."""
    if at >= len(packet):
        return None
    first = packet[at]
    if first < 252:
        return first, at + 1
    if at + 1 >= len(packet):
        return None
    return first + 4 * packet[at + 1], at + 2


def _frame_tenths_of_ms(config: int) -> int:
    """The duration of one frame of TOC configuration ``config``, in tenths of a millisecond."""
    if config < 12:  # SILK
        return (100, 200, 400, 600)[config % 4]
    if config < 16:  # hybrid
        return (100, 200)[config % 2]
    return (25, 50, 100, 200)[config % 4]  # CELT


def opus_valid(packet: bytes) -> bool:
    """Whether ``packet`` meets requirements R1 to R7 of RFC 6716 section 3.4."""
    if not packet:  # R1
        return False
    size, code = len(packet), packet[0] & 3
    if code == 0:
        return size - 1 <= 1275  # R2
    if code == 1:
        return (size - 1) % 2 == 0 and (size - 1) // 2 <= 1275  # R3, R2
    if code == 2:
        coded = _frame_length(packet, 1)  # R4
        if coded is None or coded[0] > size - coded[1]:
            return False
        return size - coded[1] - coded[0] <= 1275  # R2
    if size < 2:  # R6, R7
        return False
    count_byte = packet[1]
    vbr, padded, count = count_byte >> 7, (count_byte >> 6) & 1, count_byte & 0x3F
    if count == 0 or count * _frame_tenths_of_ms(packet[0] >> 3) > 1200:  # R5
        return False
    at, padding = 2, 0
    while padded:
        if at >= size:
            return False
        value = packet[at]
        at += 1
        padding += 254 if value == 255 else value
        padded = value == 255
    if size - at - padding < 0:
        return False
    if not vbr:  # R6
        body = size - at - padding
        return body % count == 0 and body // count <= 1275
    total = 0  # R7
    for _ in range(count - 1):
        coded = _frame_length(packet, at)
        if coded is None:
            return False
        total, at = total + coded[0], coded[1]
        if total > size - at - padding:
            return False
    return size - at - padding - total <= 1275


# -- a well-behaved client ---------------------------------------------------------------------


@dataclass
class GoodSession:
    """A well-behaved client of ``/listen``, in a thread with its own event loop.

    It streams the first utterance of a corpus clip in pcm16 at real-time pace, then silence
    (as the device does), and reads everything. :meth:`finish` waits for the words, closes
    normally and returns once the session has ended.
    """

    served: Served
    uid: str
    clip_name: str = "grocery"
    segments: list[dict[str, Any]] = field(default_factory=list)
    pings: int = 0
    close: tuple[int | None, str | None] = (None, None)
    error: BaseException | None = None
    _thread: threading.Thread | None = None
    _connected: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def reference(self) -> str:
        return str(CORPUS[self.clip_name]["utterances"][0]["text"])

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.segments)

    def start(self) -> GoodSession:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=f"good-{self.uid}")
        self._thread.start()
        assert self._connected.wait(30), "the good session did not connect"
        assert self.error is None, self.error
        return self

    async def finish(self, within: float = 120.0) -> None:
        """Wait (without blocking the caller's loop) for the words, then close normally."""
        self._stop.set()
        deadline = time.monotonic() + within
        while not self._done.is_set():
            assert time.monotonic() < deadline, f"the good session did not finish: {self.text!r}"
            await asyncio.sleep(0.1)
        assert self._thread is not None
        self._thread.join()

    def heard_everything(self) -> bool:
        return bool(self.segments) and wer(self.reference, self.text) <= MAX_WER

    async def _main(self) -> None:
        try:
            async with connect(self.served.url("pcm16"), additional_headers=self.served.auth(self.uid)) as ws:
                self._connected.set()
                sender = asyncio.create_task(self._send(ws))
                try:
                    await self._receive(ws)
                finally:
                    sender.cancel()
                await ws.close(1000, "done")
                echo = ws.protocol.close_rcvd  # the server's answer to our close
                self.close = (echo.code, echo.reason) if echo else (None, None)
        except BaseException as exc:  # reported by the test through .error
            self.error = exc
        finally:
            self._connected.set()
            self._done.set()

    async def _send(self, ws: Any) -> None:
        utterance = CORPUS[self.clip_name]["utterances"][0]
        pcm = clip(self.clip_name)[: int(utterance["end"] * 16_000) * 2]
        speech, pace = encode(pcm, "pcm16")
        quiet, _ = encode(silence(0.1), "pcm16")
        start = time.monotonic()
        for index, frame in enumerate(speech + quiet * 10**6):
            await ws.send(frame)
            await asyncio.sleep(max(0.0, start + (index + 1) * pace - time.monotonic()))

    async def _receive(self, ws: Any) -> None:
        deadline: float | None = None
        while True:
            if self._stop.is_set():
                deadline = deadline or time.monotonic() + 90
                if self.heard_everything() or time.monotonic() > deadline:
                    return
            try:
                async with asyncio.timeout(0.2):
                    message = json.loads(await ws.recv())
            except TimeoutError:
                continue
            except ConnectionClosed:
                raise
            if isinstance(message, list):
                self.segments.extend(message)
            elif message == {"type": "ping"}:
                self.pings += 1

"""Clients that hold an HTTP connection without completing a request (a real server process).

``omi-backend serve`` runs with ``OMI_HTTP_HEADER_TIMEOUT`` and ``OMI_HTTP_STALL_TIMEOUT`` set
to :data:`BOUND` seconds; the clients are raw sockets, so every byte on the wire is the test's.
Before ``app/api/http_protocol.py`` uvicorn held every stalled connection below for ever.

- 50 connections that send nothing and 50 that send half a request line are closed by the
  server (the second kind after a bodiless 408), and its open descriptors fall back to what
  they were before.
- A keep-alive connection making three requests :data:`GAP` apart (longer than the bound in
  all) is served each time: the bound starts again at each response. Half a request after
  them still gets its 408 (uvicorn's own keep-alive timer stops at the first byte).
- An event stream (``GET /live/events``) stays open past the bound.
- A request body sent slowly (its whole transfer longer than the bound) is read and answered;
  one that stops half-way is dropped.
- A client that pipelines requests for a file and reads nothing is aborted (what the kernel
  had already taken still reaches it, then the connection ends), and its descriptor released.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.api.http_protocol import REQUEST_TIMEOUT
from app.web.rendering import STATIC_DIR
from tests.serverproc import make_token, server, tail, wait_healthy
from tests.web.server import sign_in_over_http

BOUND = 2.0  # both bounds, in seconds
GAP = 0.8  # between a keep-alive client's requests, and between the parts of a slow body
WAIT = 30.0  # the most any step waits for the server (only a broken server reaches it)
CONNECTIONS = 50


@dataclass(frozen=True)
class Served:
    pid: int
    host: str
    port: int
    log: Path
    token: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("http-idle")
    data_dir, log = tmp / "data", tmp / "server.log"
    token = asyncio.run(make_token(data_dir, "alice"))
    env = {"OMI_HTTP_HEADER_TIMEOUT": str(BOUND), "OMI_HTTP_STALL_TIMEOUT": str(BOUND)}
    with server(data_dir, log, env) as (proc, address):
        asyncio.run(wait_healthy(address, proc, log))
        host, port = address.split(":")
        yield Served(proc.pid, host, int(port), log, token)
        assert proc.poll() is None, tail(log)
    assert "Traceback" not in log.read_text(), tail(log)


# --- raw sockets -------------------------------------------------------------------------------


def connect(served: Served, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(WAIT)
    sock.connect((served.host, served.port))
    return sock


def until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock``, looked at without waiting or reading."""
    sock.setblocking(False)  # a socket with a timeout would wait for something to read
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(WAIT)


def request(served: Served, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {served.host}:{served.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a ``content-length``: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length, head
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        assert chunk, f"closed in a response body: {head!r}"
        body += chunk
    assert len(body) == int(length.group(1)), "more than one response"
    return int(head.split(b" ", 2)[1]), body


def descriptors(served: Served) -> int:
    return len(os.listdir(f"/proc/{served.pid}/fd"))


def settle(served: Served, target: int, above: bool) -> int:
    """Wait until the server's descriptor count is at least (``above``) or at most ``target``."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        count = descriptors(served)
        if (count >= target) if above else (count <= target):
            return count
        time.sleep(0.1)
    return descriptors(served)


def healthy(served: Served) -> None:
    """The server answers; its side of the connection is closed on return (its EOF seen)."""
    with connect(served) as sock:
        sock.sendall(request(served, "GET", "/health", {"Connection": "close"}))
        assert response(sock)[0] == 200
        assert until_closed(sock, time.monotonic() + WAIT) == b""


# --- the tests ---------------------------------------------------------------------------------


def test_silent_and_half_sent_connections_are_closed(served: Served) -> None:
    healthy(served)
    baseline = descriptors(served)
    with ExitStack() as stack:
        silent = [stack.enter_context(connect(served)) for _ in range(CONNECTIONS)]
        half = [stack.enter_context(connect(served)) for _ in range(CONNECTIONS)]
        for sock in half:
            sock.sendall(b"GET /health HT")
        held = settle(served, baseline + 2 * CONNECTIONS, above=True)
        assert held >= baseline + 2 * CONNECTIONS, "the server did not accept every connection"

        deadline = time.monotonic() + WAIT
        assert {until_closed(sock, deadline) for sock in silent} == {b""}
        assert {until_closed(sock, deadline) for sock in half} == {REQUEST_TIMEOUT}
    assert settle(served, baseline, above=False) <= baseline, "descriptors were not released"
    healthy(served)


def test_keep_alive_requests_slower_than_nothing_are_served(served: Served) -> None:
    with connect(served) as sock:
        for _ in range(3):  # 3 x GAP is over the bound: the timer starts again after each response
            sock.sendall(request(served, "GET", "/health"))
            status, body = response(sock)
            assert status == 200 and json.loads(body)
            time.sleep(GAP)
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # uvicorn's keep-alive timer stops at a byte
        assert until_closed(sock, time.monotonic() + WAIT) == REQUEST_TIMEOUT


def test_an_event_stream_outlives_the_bound(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=WAIT) as browser:
        sign_in_over_http(browser, served.token)
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    with connect(served) as stream:
        stream.sendall(request(served, "GET", "/live/events", {"Cookie": cookie}))
        received = b""
        while b"event: ready" not in received:
            chunk = stream.recv(65536)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 "), received[:200]
        # A connection opened after the stream's request, closed for saying nothing: the bound
        # has passed for the stream too.
        with connect(served) as control:
            assert until_closed(control, time.monotonic() + WAIT) == b""
        assert still_open(stream)


def test_a_slow_body_is_read_and_a_stalled_one_dropped(served: Served) -> None:
    body = b'{"query": "", "limit": 10' + b" " * 34 + b"}"  # an empty query: 400, nothing embedded
    parts = [body[i : i + 20] for i in range(0, len(body), 20)]
    assert len(parts) * GAP > BOUND
    headers = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
    head = request(served, "POST", "/v1/memories/search", {**headers, "Content-Length": str(len(body))})
    with connect(served) as stalled, connect(served) as slow:
        stalled.sendall(head + parts[0])
        slow.sendall(head)
        for part in parts:
            time.sleep(GAP)
            slow.sendall(part)
        status, answer = response(slow)
        assert status == 400 and json.loads(answer)["extra"][0]["key"] == "query", answer
        assert until_closed(stalled, time.monotonic() + WAIT) == b""
    healthy(served)


def test_a_client_that_reads_nothing_is_aborted(served: Served) -> None:
    baseline = descriptors(served)
    script = request(served, "GET", "/static/vendor/htmx.min.js")
    # ~10 MB of responses: more than the kernel's buffers on both sides can hold.
    with connect(served, receive_buffer=4096) as sock:
        sock.sendall(script * 200)
        deadline = time.monotonic() + WAIT
        while "took nothing of its response" not in served.log.read_text():
            assert time.monotonic() < deadline, tail(served.log)
            time.sleep(0.2)
        assert settle(served, baseline, above=False) <= baseline, "the descriptor was not released"
        received = until_closed(sock, time.monotonic() + WAIT)
    assert 0 < len(received) < 200 * (STATIC_DIR / "vendor" / "htmx.min.js").stat().st_size, "not cut"
    healthy(served)

"""A tiny HTTP server for tests: fixed answers per path, every request recorded.

It serves an Omi plugin catalogue JSON, or a plugin server's ``setup_completed_url``
(``{"is_setup_completed": true}``, ``false``, garbage), on a free loopback port.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.fakes.pinecone_server import BackgroundServer

__all__ = ["Answer", "StaticServer", "static_server"]


@dataclass
class Answer:
    body: bytes
    status: int = 200
    delay: float = 0.0
    content_type: str = "application/json"


@dataclass
class StaticServer:
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not running"
        return self._server.url

    def serve(self, path: str, body: bytes | str, status: int = 200, delay: float = 0.0) -> str:
        """Answer ``GET path`` with ``body``; the full URL."""
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self.answers[path] = Answer(raw, status, delay)
        return self.url + path

    def queries(self, path: str) -> list[dict[str, list[str]]]:
        with self._lock:
            return [query for p, query in self.requests if p == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        with self._lock:
            self.requests.append((path, parse_qs(scope.get("query_string", b"").decode())))
            answer = self.answers.get(path, Answer(b'{"detail": "not found"}', 404))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        headers = [
            (b"content-type", answer.content_type.encode()),
            (b"content-length", b"%d" % len(answer.body)),
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


@pytest.fixture
def static_server() -> Iterator[StaticServer]:
    server = StaticServer()
    server._server = BackgroundServer(server)
    server._server.start()
    try:
        yield server
    finally:
        server._server.stop()

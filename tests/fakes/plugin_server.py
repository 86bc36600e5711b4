"""A fake Omi plugin server: what an external integration's webhook endpoint sees.

It parses each payload with the shapes the Omi example plugins declare (their pydantic
models, here as msgspec structs: segments with an integer ``speaker_id``, ``structured``
with a ``category``, ``plugins_results``, ``discarded``), verifies the Standard Webhooks
signature with its own implementation, answers ``{"message": ...}`` and fails on demand:
``fail`` (500), ``gone`` (410), ``slow`` (answers after ``delay`` seconds). Every request is
recorded, retries included, so tests can count deliveries per ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs

import msgspec

from tests.fakes.pinecone_server import BackgroundServer

__all__ = ["FakePluginServer", "Received"]

Mode = Literal["ok", "fail", "gone", "slow"]


# --- the Omi example plugins' models (plugins/example/models.py), as structs -----------------
class ExampleStructured(msgspec.Struct):
    title: str
    overview: str
    emoji: str = ""
    category: str = "other"


class ExampleSegment(msgspec.Struct):
    text: str
    is_user: bool
    start: float
    end: float
    speaker: str = "SPEAKER_00"
    speaker_id: int | None = None
    person_id: str | None = None


class ExamplePluginResult(msgspec.Struct):
    plugin_id: str | None
    content: str


class ExampleEvent(msgspec.Struct):
    title: str
    start: datetime
    duration: int
    description: str = ""
    created: bool = False


class ExampleStructuredWithEvents(msgspec.Struct):
    events: list[ExampleEvent] = msgspec.field(default_factory=list)


class ExampleEvents(msgspec.Struct):
    """Not in the example models: the events, to check nested datetimes are ISO with a zone."""

    structured: ExampleStructuredWithEvents


class ExampleMemory(msgspec.Struct):
    created_at: datetime
    structured: ExampleStructured
    discarded: bool
    started_at: datetime | None = None
    finished_at: datetime | None = None
    transcript_segments: list[ExampleSegment] = msgspec.field(default_factory=list)
    plugins_results: list[ExamplePluginResult] = msgspec.field(default_factory=list)


class ExampleRealtimeRequest(msgspec.Struct):
    session_id: str
    segments: list[ExampleSegment]


@dataclass(frozen=True)
class Received:
    """One request as the plugin server saw it."""

    path: str
    uid: str | None
    query: dict[str, list[str]]
    webhook_id: str
    timestamp: str
    signature_ok: bool
    raw: bytes
    status: int
    payload: Any  # ExampleMemory, ExampleRealtimeRequest, or None when it did not parse
    error: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def expected_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks ``v1`` signature, computed independently of the server's code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, webhook_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class FakePluginServer:
    """An ASGI plugin server on a loopback port, run by uvicorn in a thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secret = ""
        self.mode: Mode = "ok"
        self.delay = 5.0
        self.message = "Great conversation, keep it up!"
        self.received: list[Received] = []
        self.begun: list[str] = []  # the webhook-id of every request, as it arrives (before any delay)
        self._closing = threading.Event()
        self._server: BackgroundServer | None = None

    # --- what tests call ---------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    def accepted(self) -> dict[str, int]:
        """How many times each ``webhook-id`` was answered with a 2xx."""
        counts: dict[str, int] = {}
        with self.lock:
            for r in self.received:
                if 200 <= r.status < 300:
                    counts[r.webhook_id] = counts.get(r.webhook_id, 0) + 1
        return counts

    def requests(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if path is None or r.path == path]

    async def wait_for(self, count: int, path: str | None = None, seconds: float = 10.0) -> list[Received]:
        """Wait until at least ``count`` requests (to ``path``) arrived."""
        deadline = time.monotonic() + seconds
        while len(self.requests(path)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests to {path}, got {len(self.requests(path))}")
            await asyncio.sleep(0.02)
        return self.requests(path)

    def start(self) -> None:
        self._closing.clear()
        self._server = BackgroundServer(self)
        self._server.start()

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.stop()
            self._server = None

    # --- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender died mid-body (a SIGKILL): no request ever reached the receiver
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
        webhook_id = headers.get("webhook-id", "")
        with self.lock:
            self.begun.append(webhook_id)
        timestamp = headers.get("webhook-timestamp", "")
        signature_ok = bool(self.secret) and hmac.compare_digest(
            headers.get("webhook-signature", ""), expected_signature(self.secret, webhook_id, timestamp, raw)
        )
        payload, error = self._parse(scope["path"], raw)
        mode = self.mode
        if mode == "slow":
            deadline = time.monotonic() + self.delay
            # A threading.Event (stop() is called from the test's thread), hence the polling.
            while time.monotonic() < deadline and not self._closing.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        if not signature_ok or error is not None:
            status, body = 400, {"detail": error or "bad signature"}
        elif mode == "fail":
            status, body = 500, {"detail": "plugin server error"}
        elif mode == "gone":
            status, body = 410, {"detail": "user uninstalled"}
        else:
            status, body = 200, {"message": self.message}
        with self.lock:
            self.received.append(
                Received(
                    path=scope["path"],
                    uid=(query.get("uid") or [None])[0],
                    query=query,
                    webhook_id=webhook_id,
                    timestamp=timestamp,
                    signature_ok=signature_ok,
                    raw=raw,
                    status=status,
                    payload=payload,
                    error=error,
                )
            )
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    def _parse(path: str, raw: bytes) -> tuple[Any, str | None]:
        """Parse like the Omi example plugins do; a payload they would reject is an error."""
        try:
            if path.startswith("/memory"):
                memory = msgspec.json.decode(raw, type=ExampleMemory)
                events = msgspec.json.decode(raw, type=ExampleEvents).structured.events
                if any(e.start.tzinfo is None for e in events):
                    return None, "naive event datetime"
                if any(s.speaker_id is None for s in memory.transcript_segments):
                    return None, "segment without speaker_id"
                return memory, None
            if path.startswith("/realtime"):
                request = msgspec.json.decode(raw, type=ExampleRealtimeRequest)
                if any(s.speaker_id is None for s in request.segments):
                    return None, "segment without speaker_id"
                return request, None
        except (msgspec.ValidationError, msgspec.DecodeError, KeyError, ValueError) as exc:
            return None, str(exc)
        return None, f"unknown path {path}"

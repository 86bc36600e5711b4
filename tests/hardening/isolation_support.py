"""Helpers of the isolation matrix (``test_isolation.py``).

- :class:`Recorder`: an httpx response hook that keeps every exchange (status, headers, body),
  so that the whole run can be searched for secrets and for the other user's ids.
- :func:`found`: which of some named strings occur in a text.
- :func:`every_log`: every logger at DEBUG into ``caplog``, those that do not propagate too.
- :func:`websocket_close`: a ``/listen`` attempt straight through the app's ASGI callable (in
  the test's loop, like ``tests/inloop.py``), answered with its close code and reason.
- :class:`Events`: the server-sent events of a streaming httpx response.
"""

from __future__ import annotations

import asyncio
import io
import logging
import wave
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.web.server import ServerSentEvents

__all__ = [
    "RATE",
    "Events",
    "Exchange",
    "Recorder",
    "every_log",
    "found",
    "log_text",
    "wav",
    "websocket_close",
]

RATE = 16_000


@dataclass(frozen=True)
class Exchange:
    """One request and its response, as the client saw them."""

    method: str
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header_text(self, *, without: tuple[str, ...] = ()) -> str:
        """The response headers as ``name: value`` lines, leaving out the ``without`` names."""
        return "\n".join(f"{k}: {v}" for k, v in self.headers if k.lower() not in without)


class Recorder:
    """Keeps every exchange of the clients it is hooked into (``client.event_hooks``)."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def hook(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        client.event_hooks = {"response": [self._record]}
        return client

    async def _record(self, response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        self.exchanges.append(
            Exchange(
                method=request.method,
                url=str(request.url),
                status=response.status_code,
                headers=list(response.headers.multi_items()),
                body=response.text,
            )
        )


def found(text: str, needles: Mapping[str, str]) -> list[str]:
    """The names of the ``needles`` (name -> string) that occur in ``text``."""
    return sorted(name for name, needle in needles.items() if needle and needle in text)


@contextmanager
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every logger at DEBUG into ``caplog``: through the root for those that propagate, and
    directly for the others, for the duration. (Litestar configures logging when an app is
    built, which takes ``caplog``'s handler off the root: enter this afterwards.)"""
    caplog.set_level(logging.DEBUG)
    attached: list[logging.Logger] = []
    loggers = [logging.root] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        if logger is not logging.root:
            caplog.set_level(logging.DEBUG, logger=logger.name)
        if (logger is logging.root or not logger.propagate) and caplog.handler not in logger.handlers:
            logger.addHandler(caplog.handler)
            attached.append(logger)
    try:
        yield
    finally:
        for logger in attached:
            logger.removeHandler(caplog.handler)


def log_text(
    caplog: pytest.LogCaptureFixture, skip: Callable[[logging.LogRecord], bool] = lambda record: False
) -> str:
    """Every captured record (but those ``skip`` says) formatted in full: message, traceback, stack."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records if not skip(record))


async def websocket_close(app: Any, query: str, headers: Mapping[str, str]) -> tuple[int, str]:
    """Open ``/listen?<query>`` with ``headers`` on the app itself; its close code and reason.

    The app must close the socket without taking a frame (a refusal); the test fails if it
    sends anything else or takes longer than 30 s.
    """
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            await inbox.put({"type": "websocket.disconnect", "code": message.get("code", 1000)})

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver.local", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": "/listen",
        "raw_path": b"/listen",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "subprotocols": [],
        "state": {},
    }
    async with asyncio.timeout(30):
        await app(scope, inbox.get, send)
    kinds = [m["type"] for m in sent]
    assert kinds in (["websocket.close"], ["websocket.accept", "websocket.close"]), kinds
    return int(sent[-1].get("code", 1000)), str(sent[-1].get("reason", ""))


class Events:
    """The server-sent events of a streaming response: ``await events.next()`` is the next
    ``(event, data)``, comments (pings) skipped."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self._reader = ServerSentEvents()

    async def next(self, seconds: float = 30.0) -> tuple[str, str]:
        async with asyncio.timeout(seconds):
            async for line in self._lines:
                if (event := self._reader.feed(line)) is not None:
                    return event
        raise AssertionError("the event stream ended")


def wav(seconds: float) -> bytes:
    """A 16 kHz mono 16-bit WAV of a quiet hum (a speech profile's shape)."""
    frames = int(seconds * RATE)
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(np.resize(np.array([800, -800], dtype="<i2"), frames).tobytes())
    return out.getvalue()

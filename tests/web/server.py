"""A real uvicorn server in a thread, for the web tests that need one (event streams, the browser).

The app runs on its own event loop in that thread, as under ``omi-backend serve``; tests
reach into it with :meth:`Served.run` (a coroutine on the server's loop).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import uvicorn
from litestar import Litestar

__all__ = ["Served", "ServerSentEvents", "serving", "sign_in_over_http"]

T = TypeVar("T")
_CSRF_INPUT = re.compile(r'name="_csrf_token" value="([0-9a-f]+)"')


@dataclass(frozen=True)
class Served:
    """A running server: the app, its URL and its event loop."""

    app: Litestar
    url: str
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextmanager
def serving(app: Litestar, start_timeout: float = 180.0) -> Iterator[Served]:
    """Serve ``app`` on a free loopback port until the context ends."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=1024 * 1024,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        await server.serve()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the waiting test
            state["error"] = exc

    thread = threading.Thread(target=run, name="uvicorn-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the test server did not start: {state.get('error')!r}")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(app=app, url=f"http://127.0.0.1:{port}", loop=state["loop"])
    finally:
        server.should_exit = True
        thread.join(60)


def sign_in_over_http(client: httpx.Client, token: str) -> None:
    """Sign ``client`` in with ``token`` through the sign-in form."""
    page = client.get("/login")
    match = _CSRF_INPUT.search(page.text)
    assert match, page.text[:300]
    response = client.post("/login", data={"token": token, "next": "/", "_csrf_token": match.group(1)})
    assert response.status_code == 303, response.text[:300]


class ServerSentEvents:
    """Reads an event stream line by line: :meth:`feed` returns ``(event, data)`` when a line
    ends an event (comments and empty events are skipped)."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            done = (self._event, "\n".join(self._data)) if self._data else None
            self._event, self._data = "message", []
            return done
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        return None

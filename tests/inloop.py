"""An HTTP client for an ASGI app whose lifespan runs in the test's own event loop.

Litestar 2's ``AsyncTestClient`` runs the app's lifespan in a blocking portal (another thread
and event loop) and the requests in the test's loop (litestar-org/litestar#1920, fixed only in
3.x). Adapters whose connections belong to one loop (``redis.asyncio``, gRPC for Firestore,
httpx for OpenAI and Pinecone) then fail on their first request after start-up. Uvicorn runs
both in one loop; this does the same: the ASGI lifespan protocol in a task of the current
loop, and requests through ``httpx.ASGITransport``. No WebSockets (use ``AsyncTestClient``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

__all__ = ["InLoopClient", "in_loop_client"]


class InLoopClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that keeps the ``app`` it serves (as ``AsyncTestClient`` does)."""

    def __init__(self, app: Any, base_url: str) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), base_url=base_url)
        self.app = app


@asynccontextmanager
async def in_loop_client(app: Any, base_url: str = "http://testserver.local") -> AsyncIterator[InLoopClient]:
    """Start ``app`` (its lifespan) in this loop, yield a client for it, then shut it down."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    lifespan = asyncio.create_task(app(scope, to_app.get, from_app.put))

    async def reply() -> dict[str, Any]:
        waiting = asyncio.ensure_future(from_app.get())
        done, _ = await asyncio.wait({waiting, lifespan}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            return waiting.result()
        waiting.cancel()
        lifespan.result()  # raises what the app raised
        raise RuntimeError("the app ended its lifespan without answering")

    await to_app.put({"type": "lifespan.startup"})
    started = await reply()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"the app did not start: {started.get('message', started)}")
    try:
        async with InLoopClient(app, base_url) as client:
            yield client
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await reply()
        await lifespan
        if stopped["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"the app did not shut down cleanly: {stopped.get('message', stopped)}")

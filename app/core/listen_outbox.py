"""The messages of one live session on their way to a client that may read slowly, or not at all.

A session must never wait on its client: its results come from the speech-to-text engine's
callback and its pings from a timer, and a client that stops reading would otherwise hold
both (and, with them, the recognition of everything it says next). :class:`Outbox` takes
each message at once and writes them in order from a task of its own.

What a client leaves unread is bounded twice: a message the socket does not take within
``timeout`` seconds (``OMI_LISTEN_IDLE_SECONDS``), or more than ``limit`` characters waiting
(a million by default: about 1 MiB of JSON). Either way the outbox gives the client up: it
sets :attr:`Outbox.refused` (the caller then ends the session, whose journal keeps every
segment for its memory) and closes the socket with :data:`NOT_READING` and the reason.
Nothing is dropped while the client keeps reading: a message leaves the queue only once the
socket has taken it, and a close requested with :meth:`Outbox.close` (a refused frame, an idle
client) comes after the messages queued before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

__all__ = ["CLOSE_WAIT_S", "MAX_QUEUED_CHARS", "NOT_READING", "Outbox"]

log = logging.getLogger("omi_backend.listen")

NOT_READING: Final = 1008
MAX_QUEUED_CHARS: Final = 1 << 20  # a session's messages are segments and events, a few KiB a minute
CLOSE_WAIT_S: Final = 10.0  # the least a close frame is given (uvicorn's closing-handshake timeout)

Write = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]


class Outbox:
    """A bounded, ordered queue of text frames for one client, written by a task of its own.

    Args:
        write: Sends one text frame (may wait while the client does not read).
        close: Sends the close frame.
        timeout: The most one message may wait for the socket to take it.
        limit: The most characters that may wait.
        close_wait: The least time :meth:`close` gives the queue and the close frame.
    """

    def __init__(
        self,
        write: Write,
        close: Close,
        *,
        timeout: float,
        limit: int = MAX_QUEUED_CHARS,
        close_wait: float = CLOSE_WAIT_S,
    ) -> None:
        self._write = write
        self._close = close
        self._timeout = timeout
        self._limit = limit
        self._close_wait = max(timeout, close_wait)
        self._queue: deque[str] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self._gone = False
        self._writing = False
        self.refused: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="listen-outbox")

    @property
    def writing(self) -> bool:
        """Whether a message is being written now (for long: the client is not reading)."""
        return self._writing

    @property
    def queued(self) -> int:
        """Characters waiting to be written."""
        return self._queued

    async def send_text(self, text: str) -> None:
        """Queue one text frame (``ClientSink``); ``ConnectionError`` once nothing more can go out."""
        if self._closing is not None or self._gone or self.refused.done():
            raise ConnectionError("the socket is closing")
        if self._queued + len(text) > self._limit:
            self._refuse(f"the client is not reading: over {self._limit} characters of messages waiting")
            raise ConnectionError("the client is not reading")
        self._queue.append(text)
        self._queued += len(text)
        self._wake.set()

    async def close(self, code: int, reason: str) -> None:
        """Write what is queued, then the close frame; bounded, never raises.

        A client given up on gets the close of :attr:`refused` instead, with nothing before it.
        """
        if self._closing is None:
            self._closing = (code, reason)
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=self._close_wait)
        if not done:
            log.info("listen: the close frame could not be written in time; dropped")
            await self._stop()

    async def discard(self) -> None:
        """The client is gone: stop writing (what is queued was for it alone)."""
        self._gone = True
        await self._stop()

    async def _stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._queue.clear()
        self._queued = 0

    def _refuse(self, reason: str) -> None:
        """Give the client up: nothing more is written but the close frame."""
        if not self.refused.done():
            self.refused.set_result((NOT_READING, reason))
        self._queue.clear()
        self._queued = 0
        self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                if self.refused.done():
                    break
                if not self._queue:
                    if self._closing is not None:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                text = self._queue[0]
                self._writing = True
                try:
                    async with asyncio.timeout(self._timeout):
                        await self._write(text)
                except TimeoutError:
                    self._refuse(f"the client is not reading: a message waited over {self._timeout:g} s")
                    break
                finally:
                    self._writing = False
                if self._queue and self._queue[0] is text:  # not cleared by a refusal meanwhile
                    self._queue.popleft()
                    self._queued -= len(text)
        except Exception as exc:  # the client is gone
            log.debug("listen: write failed (%s)", exc)
            self._gone = True
            return
        code, reason = self.refused.result() if self.refused.done() else self._closing or (1000, "")
        try:
            await self._close(code, reason)
        except Exception as exc:  # the client is gone
            log.debug("listen: close failed (%s)", exc)

"""uvicorn's WebSocket protocol (``websockets`` sans-I/O), with three holes closed.

``omi-backend serve`` runs uvicorn with :class:`WebSocketProtocol` (``ws=``), a subclass of
the protocol uvicorn picks by default. What it changes, each found by
``tests/hardening/test_listen_fuzz.py``:

1. A peer that sends pings and does not read: uvicorn answers every ping at once, whatever
   is already waiting to be written, so the pongs pile up in memory without bound (40 MB of
   pings from one Python client grew the server by 125 MB in 15 s). Here, while the
   transport's write buffer is over its high-water mark, the peer is not read from: its
   pings, like its audio, wait in the kernel's buffers until it reads again.
2. A text message that is not UTF-8: uvicorn closed with 1007 and no reason (and logged a
   traceback at ERROR). Here the close carries a reason, and nothing is logged above DEBUG.
3. A peer that never reads what is left to write when the connection ends (the close frame
   included) kept its socket open for as long as it liked: asyncio's ``close()`` waits for
   the write buffer to drain. Here the connection is aborted :data:`ABORT_AFTER_S` after the
   application has finished with it, if it is still open (and the timer is cancelled when
   the connection ends first, so that it does not hold the connection's memory till then).

It relies on attributes of uvicorn's ``WebSocketsSansIOProtocol`` (``transport``,
``read_paused``, ``close_sent``, ``disconnected``, ``frames``, ``curr_msg_data_type``,
``conn``); the tests above fail if a uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["ABORT_AFTER_S", "WebSocketProtocol"]

log = logging.getLogger("omi_backend.websocket")

ABORT_AFTER_S: Final = 15.0  # uvicorn's 10 s closing handshake, and a little more to drain


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writes_held = False
        self._abort_later: asyncio.TimerHandle | None = None

    # 1. no reading while writes are held up -------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._writes_held = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writes_held = False
        if not self.read_paused:
            self.transport.resume_reading()

    async def receive(self) -> ASGIReceiveEvent:
        message = await super().receive()
        if self._writes_held:  # uvicorn resumed reading for the application's next message
            self.transport.pause_reading()
        return message

    # 2. a reason for text that is not UTF-8 -------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError as exc:
                log.debug("websocket: text that is not UTF-8 (%s)", exc)
                self.frames = []
                self.conn.fail(1007, f"text message is not valid UTF-8 (byte {exc.start})")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    # 3. no socket kept open by a peer that never reads --------------------------------------

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)
        if not self.disconnected:
            self._abort_later = self.loop.call_later(ABORT_AFTER_S, self._abort_if_open)

    def connection_lost(self, exc: Exception | None) -> None:
        # the timer would hold this protocol (its socket, buffers and scope) for 15 s after the end
        if self._abort_later is not None:
            self._abort_later.cancel()
        super().connection_lost(exc)

    def _abort_if_open(self) -> None:
        if not self.disconnected:
            log.info("websocket: %s never took the end of the connection; aborted", self.client)
            self.transport.abort()

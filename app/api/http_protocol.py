"""uvicorn's HTTP/1.1 protocol (``h11``), with bounds on how long a client may hold a connection.

``omi-backend serve`` runs uvicorn with :class:`HTTPProtocol` (``http=``), a subclass of its
``h11`` protocol (the one ``http="auto"`` picks when ``httptools`` is not installed; naming the
class pins it). uvicorn's only timer is ``timeout_keep_alive``, armed after a response and
cancelled by the first byte that follows, so a client could hold a socket for as long as it
liked by sending nothing, half a request, half a body, or by not reading its response (50
connections that sent nothing were all still open after 60 s; ``tests/hardening/test_http_idle.py``
holds each case). Here:

1. A request head (request line and headers) must be complete within :attr:`header_timeout`
   of the connection opening or of the previous response ending; otherwise the connection is
   closed, after a bodiless ``408`` if part of a head had arrived. The timer stops as soon as
   a head arrives, so a slow handler, a long response (``/live/events``) or a WebSocket
   upgrade is never cut by it.
2. While the application waits for more of a request body, a client that sends nothing for
   :attr:`stall_timeout` is disconnected (the application receives ``http.disconnect``). A
   slow upload is not cut while bytes keep coming, nor is the silence counted while the server
   itself is not reading (flow control, or a ``100 Continue`` not sent yet), nor once the
   response has started.
3. A client that takes no byte of what is left to write to it for :attr:`stall_timeout`
   (the application blocked on a full buffer, or a connection closing with data unsent) is
   aborted.

It relies on attributes of uvicorn's ``H11Protocol`` (``conn``, ``scope``, ``cycle`` with its
``more_body``, ``response_started``, ``response_complete``, ``disconnected`` and
``waiting_for_100_continue``, ``flow.read_paused`` and ``write_paused``, ``transport``,
``loop``) and on which of its methods see a request head (``handle_events``), a response end
(``on_response_complete``) and an upgrade (``handle_websocket_upgrade``); the test above
fails if a uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Final, cast

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["REQUEST_TIMEOUT", "HTTPProtocol"]

log = logging.getLogger("omi_backend.http")

REQUEST_TIMEOUT: Final = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HTTPProtocol(H11Protocol):
    """See the module docstring; :meth:`bounded` sets the two bounds."""

    header_timeout: ClassVar[float] = 10.0
    stall_timeout: ClassVar[float] = 30.0

    @classmethod
    def bounded(cls, *, header_timeout: float, stall_timeout: float) -> type[HTTPProtocol]:
        """This protocol with other bounds (uvicorn builds one instance per connection)."""
        bounds = {"header_timeout": header_timeout, "stall_timeout": stall_timeout}
        return cast("type[HTTPProtocol]", type(cls.__name__, (cls,), bounds))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0
        self._unwritten = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        super().data_received(data)

    def handle_events(self) -> None:
        scope = self.scope
        super().handle_events()
        if self.scope is not scope and self._head_timer is not None:  # a request head arrived
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is None and self._reading_body():
            self._body_timer = self.loop.call_later(self.stall_timeout, self._check_body)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._await_head()  # before uvicorn handles a request that is already waiting
        super().on_response_complete()
        if self.transport.is_closing():
            self._watch_writes()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._cancel_timers()  # the connection is the WebSocket protocol's from now on
        super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        self._watch_writes()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None and not self.transport.is_closing():
            self._write_timer.cancel()  # the client is reading
            self._write_timer = None

    # 1. a complete request head within header_timeout ---------------------------------------

    def _await_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():  # uvicorn's keep-alive timer closed it; unsent data?
            self._watch_writes()
            return
        partial = bool(self.conn.trailing_data[0])
        log.debug("http: %s sent no complete request head in %gs", self.client, self.header_timeout)
        if partial:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()
        self._watch_writes()

    # 2. a request body that stops arriving --------------------------------------------------

    def _reading_body(self) -> bool:
        cycle = self.cycle
        return (
            cycle is not None
            and cycle.more_body
            and not cycle.response_started
            and not cycle.disconnected
            and not self.transport.is_closing()
        )

    def _check_body(self) -> None:
        self._body_timer = None
        if not self._reading_body():
            return
        now = self.loop.time()
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            self._last_read = now  # the silence is the server's
        left = self._last_read + self.stall_timeout - now
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._check_body)
            return
        log.info("http: %s sent no byte of its request body in %gs; closed", self.client, self.stall_timeout)
        self.transport.close()
        self._watch_writes()

    # 3. a client that takes nothing of what is left to write ---------------------------------

    def _watch_writes(self) -> None:
        if self._write_timer is None and self.transport.get_write_buffer_size():
            self._unwritten = self.transport.get_write_buffer_size()
            self._write_timer = self.loop.call_later(self.stall_timeout, self._check_writes)

    def _check_writes(self) -> None:
        self._write_timer = None
        unwritten = self.transport.get_write_buffer_size()
        if not unwritten or not (self.flow.write_paused or self.transport.is_closing()):
            return
        if unwritten != self._unwritten:  # some taken (or more queued): look again later
            self._watch_writes()
            return
        log.info("http: %s took nothing of its response in %gs; aborted", self.client, self.stall_timeout)
        self.transport.abort()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._write_timer = None

"""How ``omi-backend serve`` runs an app under uvicorn: one place, so benchmarks run the same.

:func:`serve_app` configures logging with credentials redacted (uvicorn logs query strings,
the websockets library logs headers) and runs uvicorn with the protocol subclasses and
limits the hardening tests hold (tests/hardening/).
"""

from __future__ import annotations

import logging.config

import uvicorn
from litestar import Litestar

from app.api.http_protocol import HTTPProtocol
from app.api.websocket_protocol import WebSocketProtocol
from app.logsafe import logging_config

__all__ = ["configure_logging", "serve_app"]


def configure_logging(level: str) -> None:
    """Every handler redacts credentials; call it before the app is built, so that its
    start-up messages go through it too."""
    logging.config.dictConfig(logging_config(level))


def serve_app(
    app: Litestar,
    *,
    host: str,
    port: int,
    log_level: str,
    header_timeout: float = HTTPProtocol.header_timeout,
    stall_timeout: float = HTTPProtocol.stall_timeout,
) -> None:
    """Serve ``app`` until the process is told to stop (blocks); the two timeouts are
    ``OMI_HTTP_HEADER_TIMEOUT`` and ``OMI_HTTP_STALL_TIMEOUT`` (see :mod:`app.api.http_protocol`)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=logging_config(log_level),
        # uvicorn's h11 protocol (pinned: "auto" would switch to httptools if it were installed),
        # with bounds on clients that hold a connection without completing a request.
        http=HTTPProtocol.bounded(header_timeout=header_timeout, stall_timeout=stall_timeout),
        ws=WebSocketProtocol,  # uvicorn's, with backpressure on pings and bounded closes
        ws_max_size=1024 * 1024,
        timeout_graceful_shutdown=10,  # open /live event streams would otherwise hold a stop
    )

"""Secrets out of the logs: a filter that blanks credentials in every record it passes.

Uvicorn logs each request's path with its query string (the access log, and the ``WebSocket
/listen?...`` lines at INFO), and the ``websockets`` library logs every handshake header at
DEBUG: a browser's ``/listen?token=``, an ``Authorization`` or ``Cookie`` header, and the
Deepgram key the server itself sends would all land in the logs. :class:`RedactSecrets`, on
every handler ``omi-backend serve`` configures (:func:`logging_config`), replaces them with
``[redacted]``:

- the values of the ``token``, ``key``, ``api_key``/``api-key``, ``access_token``, ``secret``
  and ``password`` query parameters;
- the values of ``Authorization``, ``Cookie``, ``Set-Cookie``, ``api-key``/``api_key`` and
  ``X-CSRFToken`` headers written ``Name: value``;
- anything shaped like one of the server's secrets (``omi_...`` tokens, ``omi_ik_...``
  integration keys, ``whsec_...`` webhook secrets) or like a JWT (Firebase ID tokens).
"""

from __future__ import annotations

import atexit
import copy
import logging
import queue
import re
import sys
from collections.abc import Mapping
from logging.handlers import QueueHandler, QueueListener
from typing import Any, Final

__all__ = ["REDACTED", "QueuedStderr", "RedactSecrets", "logging_config", "redact"]

REDACTED: Final = "[redacted]"

_QUERY = re.compile(r"(?i)([?&;](?:token|key|api[_-]key|access_token|secret|password)=)[^&#\s\"']*")
_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|api[_-]key|x-csrftoken)([\"']?\s*:\s*)\S[^\r\n]*"
)
_SHAPES = re.compile(
    r"\b(omi_(?:ik_)?)[A-Za-z0-9_-]{20,}"  # user tokens and integration keys (app.core.tokens)
    r"|\b(whsec_)[A-Za-z0-9+/=_-]{16,}"  # webhook signing secrets
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWTs (Firebase ID tokens)
)
_FORMATTER = logging.Formatter()


def _shape(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2) or "") + REDACTED


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``[redacted]`` (see the module doc)."""
    text = _QUERY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _SHAPES.sub(_shape, text)


def _clean(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """A handler filter that redacts the message, its arguments and its traceback in place.

    Arguments are redacted one by one, so formatters that read them (uvicorn's access log
    reads the five of a request line) keep working; a secret that only shows once they are
    put together (``"%s: %s" % ("Authorization", "Bearer ...")``) makes the record's message
    the redacted text, without arguments.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {name: _clean(arg) for name, arg in record.args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: the handler reports it as it always would
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class QueuedStderr(QueueHandler):
    """A handler that never blocks its caller: records go through a queue to a thread that
    writes them to stderr (the event loop never waits on the log's pipe)."""

    def __init__(self) -> None:
        super().__init__(queue.SimpleQueue())
        self._listener: QueueListener | None = QueueListener(self.queue, logging.StreamHandler(sys.stderr))
        self._listener.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Write what is queued, then stop the thread (``dictConfig`` closes replaced handlers)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        super().close()


def logging_config(level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of ``omi-backend serve``: uvicorn's own handlers and
    formats, ours (``LEVEL name: message`` on stderr, through :class:`QueuedStderr`) for every
    other logger (Litestar's included), each handler behind :class:`RedactSecrets`. A new dict
    each call (``dictConfig`` consumes it)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactSecrets}}
    config["formatters"]["plain"] = {"format": "%(levelname)s %(name)s: %(message)s"}
    config["handlers"]["plain"] = {"()": QueuedStderr, "formatter": "plain"}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    # Litestar gives its own logger a handler of its own when the app is built: back to ours.
    config["loggers"]["litestar"] = {"level": level.upper()}
    config["root"] = {"handlers": ["plain"], "level": level.upper()}
    return config

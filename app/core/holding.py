"""Holding a write through a short outage of a backend (Redis restarting, failing over).

:func:`held` calls a coroutine again, with exponential backoff, for as long as it raises
``BackendUnavailable`` and at most ``seconds``; then it lets the error through. The caller
decides what holding means for it: a live session holds its next result (the client sees
it late, never before it is kept), the webhooks worker holds the record of a delivery's
outcome (so a delivered webhook is not sent again).

Only writes that may be repeated belong here: each retry sends the whole call again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from app.core.errors import BackendUnavailable

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "held"]

log = logging.getLogger("omi_backend.holding")

BACKOFF_FIRST: Final = 0.05
BACKOFF_MAX: Final = 1.0

_T = TypeVar("_T")


async def held(what: str, call: Callable[[], Awaitable[_T]], seconds: float) -> _T:
    """``await call()``, again while it raises ``BackendUnavailable``, for at most ``seconds``.

    Args:
        what: What is being done, for the log (a warning when the hold starts and ends).
        call: Makes a fresh awaitable for each attempt.
        seconds: The longest the hold lasts; the last error is raised after it.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    delay = BACKOFF_FIRST
    failures = 0
    while True:
        try:
            result = await call()
        except BackendUnavailable as exc:
            left = began + seconds - loop.time()
            if left <= 0:
                log.error("%s: %s; gave up after %.1f s", what, exc, loop.time() - began)
                raise
            if not failures:
                log.warning("%s: %s; holding for up to %.0f s", what, exc, left)
            failures += 1
            await asyncio.sleep(min(delay, left))
            delay = min(2 * delay, BACKOFF_MAX)
            continue
        if failures:
            log.warning("%s: done after %.1f s held (%d retries)", what, loop.time() - began, failures)
        return result

"""What the operations commands share: closing adapters however they close."""

from __future__ import annotations

import inspect
import logging

__all__ = ["close_all"]

log = logging.getLogger("omi_backend.ops")


async def close_all(*adapters: object) -> None:
    """Close each adapter that has a ``close`` (async or not); a failure to close is only logged."""
    for adapter in adapters:
        close = getattr(adapter, "close", None)
        if close is None:
            continue
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.warning("closing %s failed: %s", type(adapter).__name__, exc)

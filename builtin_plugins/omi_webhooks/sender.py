"""One signed HTTP attempt and what its answer means."""

from __future__ import annotations

import httpx
import msgspec

from app.core.pinned_transport import AddressRefused
from builtin_plugins.omi_webhooks.signing import signed_headers

__all__ = ["MESSAGE_MIN_CHARS", "Outcome", "send_signed"]

MESSAGE_MIN_CHARS = 6
"""A reply ``message`` becomes a Message when it has more than 5 characters (as in Omi)."""


class Outcome(msgspec.Struct, kw_only=True):
    """What one attempt came to.

    Attributes:
        status: The HTTP status, or ``None`` without an answer.
        error: What went wrong (``None`` for a 2xx).
        reply: The reply's ``message`` when it is to become a Message.
        target_failed: The target is unwell (no connection, timeout, 5xx, 429): the breaker counts it.
        final: Delivered, gone (410) or refused: never to be retried.
    """

    status: int | None = None
    error: str | None = None
    reply: str | None = None
    target_failed: bool = False
    final: bool = False


def _reply_message(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    message = data.get("message") if isinstance(data, dict) else None
    return message if isinstance(message, str) and len(message) >= MESSAGE_MIN_CHARS else None


async def send_signed(
    client: httpx.AsyncClient, url: str, body: bytes, *, secret: str, webhook_id: str, timestamp: int
) -> Outcome:
    """POST ``body`` to ``url`` with the Standard Webhooks headers; never raises an HTTP error."""
    outcome = Outcome()
    try:
        headers = signed_headers(secret, webhook_id, timestamp, body)
        response = await client.post(url, content=body, headers=headers)
    except AddressRefused as exc:  # the host resolved to a refused address: never retried
        outcome.error, outcome.final = f"refused: {exc}", True
        return outcome
    except httpx.TimeoutException as exc:
        outcome.error, outcome.target_failed = f"timeout: {type(exc).__name__}", True
        return outcome
    except httpx.HTTPError as exc:
        outcome.error, outcome.target_failed = f"{type(exc).__name__}: {exc}", True
        return outcome
    status = response.status_code
    outcome.status = status
    outcome.reply = _reply_message(response)
    outcome.target_failed = status >= 500 or status == 429
    outcome.final = 200 <= status < 300 or status == 410
    if not 200 <= status < 300:
        outcome.error = f"HTTP {status}"
    return outcome

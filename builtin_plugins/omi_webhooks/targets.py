"""Which catalogue entries to call, and where: webhook targets from Omi-format entries."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import urlsplit

import msgspec

__all__ = ["Target", "breaker_key", "webhook_targets", "with_uid"]


class Target(msgspec.Struct, frozen=True):
    """A catalogue entry to call: its id and webhook URL."""

    plugin_id: str
    webhook_url: str


def _as_dict(entry: object) -> dict[str, Any]:
    if isinstance(entry, dict):
        return entry
    if isinstance(entry, msgspec.Struct):
        value = msgspec.to_builtins(entry)
        return value if isinstance(value, dict) else {}
    return {}


async def webhook_targets(catalogue: Any, trigger: str) -> list[Target]:
    """The catalogue entries to call on ``trigger`` (``memory_creation`` or ``transcript_processed``).

    ``catalogue.omi_entries()`` may be plain or async and return Omi-format dicts or structs;
    an entry qualifies when it is not deleted, declares the ``external_integration``
    capability and its ``external_integration.triggers_on`` is ``trigger``.
    """
    if catalogue is None:
        return []
    entries = catalogue.omi_entries()
    if inspect.isawaitable(entries):
        entries = await entries
    targets: list[Target] = []
    for raw in entries or ():
        entry = _as_dict(raw)
        integration = entry.get("external_integration") or {}
        if (
            not entry.get("deleted")
            and "external_integration" in (entry.get("capabilities") or ())
            and isinstance(integration, dict)
            and integration.get("triggers_on") == trigger
            and isinstance(integration.get("webhook_url"), str)
            and integration["webhook_url"]
            and isinstance(entry.get("id"), str)
        ):
            targets.append(Target(entry["id"], integration["webhook_url"]))
    return targets


def with_uid(url: str, uid: str) -> str:
    """``url?uid=<uid>``, or ``url&uid=<uid>`` when it already has a query (as the Omi backend)."""
    return f"{url}{'&' if '?' in url else '?'}uid={uid}"


def breaker_key(url: str) -> str:
    """The circuit breaker's key of a URL: ``host:port``."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return parts.netloc.lower()
    return f"{(parts.hostname or '').lower()}:{port}"

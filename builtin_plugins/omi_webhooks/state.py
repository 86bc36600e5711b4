"""What the webhooks keep in the KeyValue port: the retry queue, the delivery log, disabling.

- ``webhooks:queue``: a hash of webhook id -> :class:`QueuedDelivery` (JSON). A delivery is
  written there before its first attempt and removed when it succeeds or is given up, so a
  restart (or a crash mid-attempt) loses none; the body is stored so every retry sends the
  same bytes under the same ``webhook-id``.
- ``webhooks:claim:{webhook id}``: taken (``add`` with a TTL) by the process attempting a
  delivery, so several server processes on one Redis never send it twice at once.
- ``webhooks:given_up:{webhook id}``: a delivery given up after its last attempt, kept
  (:data:`GIVEN_UP_DAYS` days) so that its user can send it again from the delivery log:
  :func:`requeue` puts it (or a queued delivery) back in the queue, due now.
- ``plugins:{id}:deliveries:{uid}``: the delivery log, a capped list of
  :class:`DeliveryRecord` (JSON), oldest first; :func:`read_deliveries` reads it.
- ``users:{uid}:enabled_plugins``: the catalogue's JSON list of the plugins a user enabled;
  :func:`disable_for_user` removes one (a ``410 Gone`` reply).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

from app.core.ports import KeyValue

__all__ = [
    "CLAIM_PREFIX",
    "GIVEN_UP_DAYS",
    "GIVEN_UP_PREFIX",
    "QUEUE_KEY",
    "DeliveryRecord",
    "Event",
    "QueuedDelivery",
    "append_delivery",
    "deliveries_key",
    "disable_for_user",
    "enabled_plugins_key",
    "give_up",
    "memory_webhook_id",
    "read_deliveries",
    "requeue",
    "retryable",
]

QUEUE_KEY = "webhooks:queue"
CLAIM_PREFIX = "webhooks:claim:"
GIVEN_UP_PREFIX = "webhooks:given_up:"
GIVEN_UP_DAYS = 30
LOG_CAP = 100
_WEBHOOK_IDS = uuid.UUID("6f1d3c52-8a47-4e0b-9d3a-5c2e7b9f1a64")

Event = Literal["memory_created", "transcript_processed"]


class QueuedDelivery(msgspec.Struct, kw_only=True):
    """A memory-created delivery waiting for its next attempt.

    Attributes:
        plugin_id: The catalogue entry it is for.
        uid: The user whose memory it carries.
        url: The full URL, ``?uid=`` included.
        body: The JSON body, exactly as every attempt sends it.
        attempt: How many attempts were made so far.
        due_at: Unix seconds of the next attempt.
        memory_id: The memory, for the ``memories_id`` of a reply's message.
    """

    plugin_id: str
    uid: str
    url: str
    body: str
    attempt: int = 0
    due_at: float
    memory_id: str | None = None


class DeliveryRecord(msgspec.Struct, kw_only=True):
    """One attempt (or refusal) in the delivery log.

    Attributes:
        webhook_id: The ``webhook-id`` header (shared by the retries of one delivery).
        at: When the attempt started.
        url: Where it went.
        status: The HTTP status, or ``None`` without an answer (refused, timeout, no connection).
        attempt: 1 for the first attempt, 2 for the first retry, ...
        error: What went wrong, or ``None``.
        duration_ms: How long the attempt took.
        event: ``memory_created`` or ``transcript_processed``.
    """

    webhook_id: str
    at: datetime
    url: str
    status: int | None
    attempt: int
    error: str | None = None
    duration_ms: int = 0
    event: Event = "memory_created"


def memory_webhook_id(plugin_id: str, uid: str, memory_id: str) -> str:
    """The ``webhook-id`` of a memory's delivery to a plugin: the same every time it is made
    (a crash that re-runs ``on_memory_created`` sends the same id, which receivers dedupe by)."""
    name = f"{plugin_id}\n{uid}\n{memory_id}"
    return f"msg_{uuid.uuid5(_WEBHOOK_IDS, name).hex}"


def deliveries_key(plugin_id: str, uid: str) -> str:
    """The KeyValue key of the delivery log of one plugin and user."""
    return f"plugins:{plugin_id}:deliveries:{uid}"


def enabled_plugins_key(uid: str) -> str:
    """The KeyValue key of a user's enabled plugins (a JSON list of ids)."""
    return f"users:{uid}:enabled_plugins"


async def append_delivery(kv: KeyValue, plugin_id: str, uid: str, record: DeliveryRecord) -> None:
    """Add ``record`` to the log, keeping about the last :data:`LOG_CAP` records."""
    key = deliveries_key(plugin_id, uid)
    length = await kv.append(key, msgspec.json.encode(record).decode())
    if length > 2 * LOG_CAP:  # compact now and then rather than on every append
        kept = await kv.items(key, -LOG_CAP, -1)
        await kv.delete(key)
        await kv.append(key, *kept)


async def read_deliveries(kv: KeyValue, plugin_id: str, uid: str, limit: int = 50) -> list[DeliveryRecord]:
    """The last ``limit`` log records of one plugin and user, newest first."""
    if limit <= 0:
        return []
    raw = await kv.items(deliveries_key(plugin_id, uid), -limit, -1)
    return [msgspec.json.decode(item, type=DeliveryRecord) for item in reversed(raw)]


async def give_up(kv: KeyValue, webhook_id: str, delivery: QueuedDelivery) -> None:
    """Keep a delivery given up after its last attempt, so that it can be sent again."""
    value = msgspec.json.encode(delivery).decode()
    await kv.set(GIVEN_UP_PREFIX + webhook_id, value, ttl=GIVEN_UP_DAYS * 86_400.0)


def _owned(raw: str | None, plugin_id: str, uid: str) -> QueuedDelivery | None:
    if raw is None:
        return None
    try:
        delivery = msgspec.json.decode(raw, type=QueuedDelivery)
    except msgspec.DecodeError:
        return None
    return delivery if (delivery.plugin_id, delivery.uid) == (plugin_id, uid) else None


async def retryable(kv: KeyValue, plugin_id: str, uid: str, webhook_ids: Iterable[str]) -> set[str]:
    """Which of ``webhook_ids`` (deliveries of one plugin to one user) can be sent again now:
    the ones waiting in the queue for a later attempt and the ones given up."""
    wanted = set(webhook_ids)
    if not wanted:
        return set()
    queue = await kv.hgetall(QUEUE_KEY)
    found: set[str] = set()
    for webhook_id in wanted:
        raw = queue.get(webhook_id) or await kv.get(GIVEN_UP_PREFIX + webhook_id)
        if _owned(raw, plugin_id, uid) is not None:
            found.add(webhook_id)
    return found


async def requeue(
    kv: KeyValue, plugin_id: str, uid: str, webhook_id: str, now: float
) -> QueuedDelivery | None:
    """Make a delivery of ``plugin_id`` to ``uid`` due at ``now``: one waiting in the queue, or
    one given up (back in the queue for one more attempt). ``None`` when there is no such
    delivery of that plugin and user.

    A delivery being attempted at that moment keeps the schedule that attempt gives it.
    """
    raw = await kv.hget(QUEUE_KEY, webhook_id)
    given_up = raw is None
    if given_up:
        raw = await kv.get(GIVEN_UP_PREFIX + webhook_id)
    delivery = _owned(raw, plugin_id, uid)
    if delivery is None:
        return None
    delivery.due_at = now
    await kv.hset(QUEUE_KEY, webhook_id, msgspec.json.encode(delivery).decode())
    if given_up:
        await kv.delete(GIVEN_UP_PREFIX + webhook_id)
    return delivery


async def disable_for_user(kv: KeyValue, plugin_id: str, uid: str) -> bool:
    """Remove ``plugin_id`` from the user's enabled plugins; whether it was there.

    It edits the catalogue's stored state directly (read, filter, write), as a ``POST
    /v1/plugins/disable`` by the user would leave it.
    """
    key = enabled_plugins_key(uid)
    raw = await kv.get(key)
    if raw is None:
        return False
    try:
        enabled = msgspec.json.decode(raw, type=list[str])
    except msgspec.DecodeError:
        return False
    if plugin_id not in enabled:
        return False
    await kv.set(key, msgspec.json.encode([p for p in enabled if p != plugin_id]).decode())
    return True

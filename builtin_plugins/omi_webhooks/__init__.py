"""Webhooks to Omi plugin servers: signed, retried from a durable queue, logged.

The entry point ``omi_webhooks`` names :class:`OmiWebhooks`. It adds a page to the web app,
``/plugins/{id}/deliveries`` (:mod:`.pages`): the signed-in user's delivery log of one
catalogue entry (:func:`read_deliveries`), with a button that sends a delivery again.
"""

from __future__ import annotations

from builtin_plugins.omi_webhooks.breaker import CircuitBreaker
from builtin_plugins.omi_webhooks.plugin import SCHEDULE, OmiWebhooks
from builtin_plugins.omi_webhooks.signing import sign, webhook_secret
from builtin_plugins.omi_webhooks.state import QUEUE_KEY, DeliveryRecord, QueuedDelivery, read_deliveries
from builtin_plugins.omi_webhooks.targets import Target, webhook_targets, with_uid

__all__ = [
    "QUEUE_KEY",
    "SCHEDULE",
    "CircuitBreaker",
    "DeliveryRecord",
    "OmiWebhooks",
    "QueuedDelivery",
    "Target",
    "read_deliveries",
    "sign",
    "webhook_secret",
    "webhook_targets",
    "with_uid",
]

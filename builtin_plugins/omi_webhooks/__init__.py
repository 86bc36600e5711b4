"""Webhooks to Omi plugin servers: signed, retried from a durable queue, logged.

The entry point ``omi_webhooks`` names :class:`OmiWebhooks`; the web pages read a plugin's
delivery log with :func:`read_deliveries` and show its secret with :func:`webhook_secret`.
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

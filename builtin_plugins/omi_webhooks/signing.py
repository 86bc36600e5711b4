"""Standard Webhooks signatures (https://www.standardwebhooks.com/) with a secret per plugin.

Each delivery carries ``webhook-id`` (the same on every retry), ``webhook-timestamp`` (unix
seconds of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` of
``"{id}.{timestamp}.{body}"``. The secret is ``whsec_`` followed by the base64 of random
bytes; the HMAC key is those bytes. A plugin server verifies with any Standard Webhooks
library given the same ``whsec_...`` string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from app.core.ports import KeyValue

__all__ = ["SECRET_PREFIX", "new_secret", "secret_key", "sign", "signed_headers", "webhook_secret"]

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def secret_key(plugin_id: str) -> str:
    """The KeyValue key of a plugin's webhook secret."""
    return f"plugins:{plugin_id}:webhook_secret"


def new_secret() -> str:
    """A fresh ``whsec_<base64>`` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


async def webhook_secret(kv: KeyValue, plugin_id: str) -> str:
    """The plugin's webhook secret, made (once, race-free) on first use.

    The plugin's author needs it to verify deliveries; the web pages show it from here.
    """
    key = secret_key(plugin_id)
    await kv.add(key, new_secret())
    secret = await kv.get(key)
    if secret is None:  # deleted between the two calls: make it again
        secret = new_secret()
        await kv.set(key, secret)
    return secret


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt: the three Standard Webhooks headers and the content type."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }

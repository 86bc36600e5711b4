"""The pieces of omi_webhooks on their own: signatures, secrets, the breaker, the log, targets."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.backends.sqlite_kv import SQLiteKeyValue
from app.plugins.models import ExternalIntegration, Plugin, TriggersOn
from builtin_plugins.omi_webhooks import CircuitBreaker, DeliveryRecord, read_deliveries, sign, webhook_secret
from builtin_plugins.omi_webhooks.state import LOG_CAP, append_delivery, disable_for_user
from builtin_plugins.omi_webhooks.targets import webhook_targets, with_uid
from tests.fakes.plugin_server import expected_signature

pytestmark = pytest.mark.anyio


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_a_plugin_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    kv = SQLiteKeyValue(tmp_path / "kv.db")
    try:
        first = await webhook_secret(kv, "notes")
        assert first.startswith("whsec_") and len(base64.b64decode(first[6:])) == 32
        assert await webhook_secret(kv, "notes") == first
        assert await kv.get("plugins:notes:webhook_secret") == first
        assert await webhook_secret(kv, "other") != first
        body = b'{"a": 1}'
        assert sign(first, "msg_1", 1700000000, body) == expected_signature(
            first, "msg_1", "1700000000", body
        )
    finally:
        await kv.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock, threshold=3, cooldown=60)
    for _ in range(2):
        assert breaker.allow("a:80")
        breaker.failure("a:80")
    assert breaker.state("a:80") == "closed"
    breaker.success("a:80")  # a success resets the count
    for _ in range(3):
        breaker.failure("a:80")
    assert breaker.state("a:80") == "open" and not breaker.allow("a:80")
    assert breaker.retry_at("a:80") == 1060
    assert breaker.allow("b:80")  # per target
    clock.now = 1060
    assert breaker.state("a:80") == "half-open"
    assert breaker.allow("a:80")  # the probe
    assert not breaker.allow("a:80")  # only one at a time
    breaker.failure("a:80")  # the probe failed: open for another cooldown
    assert breaker.state("a:80") == "open" and breaker.retry_at("a:80") == 1120
    clock.now = 1120
    assert breaker.allow("a:80")
    breaker.release("a:80")  # a cancelled probe lets another through
    assert breaker.allow("a:80")
    breaker.success("a:80")
    assert breaker.state("a:80") == "closed" and breaker.allow("a:80")


async def test_the_delivery_log_is_capped_and_read_newest_first(tmp_path: Path) -> None:
    kv = SQLiteKeyValue(tmp_path / "kv.db")
    try:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(2 * LOG_CAP + 5):
            record = DeliveryRecord(
                webhook_id=f"msg_{i}", at=at, url="https://x/y?uid=u", status=200, attempt=1
            )
            await append_delivery(kv, "notes", "u", record)
        assert len(await kv.items("plugins:notes:deliveries:u")) <= 2 * LOG_CAP
        newest = await read_deliveries(kv, "notes", "u", limit=3)
        assert [r.webhook_id for r in newest] == [f"msg_{2 * LOG_CAP + 4 - i}" for i in range(3)]
        raw = msgspec.json.decode((await kv.items("plugins:notes:deliveries:u", -1, -1))[0])
        assert set(raw) == {"webhook_id", "at", "url", "status", "attempt", "error", "duration_ms", "event"}
        assert await read_deliveries(kv, "notes", "nobody") == []
        assert await read_deliveries(kv, "notes", "u", limit=0) == []
    finally:
        await kv.close()


async def test_disable_for_user_edits_the_enabled_list(tmp_path: Path) -> None:
    kv = SQLiteKeyValue(tmp_path / "kv.db")
    try:
        assert not await disable_for_user(kv, "notes", "u")
        await kv.set("users:u:enabled_plugins", '["a", "notes", "b"]')
        assert await disable_for_user(kv, "notes", "u")
        assert await kv.get("users:u:enabled_plugins") == '["a","b"]'
        assert not await disable_for_user(kv, "notes", "u")
    finally:
        await kv.close()


def test_uid_is_appended_as_the_omi_backend_does() -> None:
    assert with_uid("https://x.org/hook", "alice") == "https://x.org/hook?uid=alice"
    assert with_uid("https://x.org/hook?token=1", "alice") == "https://x.org/hook?token=1&uid=alice"


def _entry(plugin_id: str, trigger: TriggersOn, **extra: Any) -> Plugin:
    integration = ExternalIntegration(triggers_on=trigger, webhook_url=f"https://{plugin_id}.org/h")
    fields: dict[str, Any] = {
        "id": plugin_id,
        "name": plugin_id,
        "capabilities": ["external_integration"],
        "external_integration": integration,
    }
    return Plugin(**(fields | extra))


class AsyncCatalogue:
    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries

    async def omi_entries(self) -> list[Any]:
        return self.entries


async def test_targets_come_from_plugin_structs_or_dicts_sync_or_async() -> None:
    entries: list[Any] = [
        _entry("memo", "memory_creation"),
        _entry("live", "transcript_processed"),
        _entry("gone", "memory_creation", deleted=True),
        _entry("prompt", "memory_creation", capabilities=["memories"]),
        {"id": "raw", "capabilities": ["external_integration"],
         "external_integration": {"triggers_on": "memory_creation", "webhook_url": "https://raw.org/h"}},
        {"id": "broken", "capabilities": ["external_integration"], "external_integration": "nope"},
    ]  # fmt: skip
    targets = await webhook_targets(AsyncCatalogue(entries), "memory_creation")
    assert [(t.plugin_id, t.webhook_url) for t in targets] == [
        ("memo", "https://memo.org/h"),
        ("raw", "https://raw.org/h"),
    ]
    assert [t.plugin_id for t in await webhook_targets(AsyncCatalogue(entries), "transcript_processed")] == [
        "live"
    ]
    assert await webhook_targets(None, "memory_creation") == []

"""Storage adapters facing a service that is down: ``BackendUnavailable`` soon, never a hang.

Each adapter is pointed, through its SDK's own endpoint setting, at a loopback port where
nothing listens; its retries run out within the timeout it was given and the outage comes out
as the domain's ``BackendUnavailable`` (which the API answers with a 503).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from app.backends.firestore_store import FirestoreMemoryStore
from app.backends.gcs_blobs import GCSBlobStore
from app.backends.redis_kv import RedisKeyValue
from app.core.errors import BackendUnavailable
from app.core.models import Memory
from app.core.ports import MemoryQuery
from tests.backends.emulators import anonymous_client, free_port

pytestmark = pytest.mark.anyio

TIMEOUT = 1.5


async def fails_soon(backend: str, call: Callable[[], Awaitable[Any]]) -> BackendUnavailable:
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await call()
    assert caught.value.backend == backend
    assert time.monotonic() - began < TIMEOUT + 5
    return caught.value


async def test_firestore_down_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    store = FirestoreMemoryStore("omi-backend-test", timeout=TIMEOUT)
    try:
        await fails_soon("firestore", lambda: store.list("alice", MemoryQuery()))
        now = datetime.now(UTC)
        memory = Memory(id="m1", created_at=now, started_at=now, finished_at=now)
        await fails_soon("firestore", lambda: store.put("alice", memory))
    finally:
        await store.close()


async def test_cloud_storage_down_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    client = anonymous_client()
    blobs = GCSBlobStore("omi-backend-test", client=client, timeout=TIMEOUT)
    try:
        await fails_soon("gcs", lambda: blobs.put("alice/x.bin", b"x"))
        await fails_soon("gcs", lambda: blobs.paths())
    finally:
        await blobs.close()
        client.close()


async def test_redis_down_is_backend_unavailable() -> None:
    kv = RedisKeyValue(f"redis://127.0.0.1:{free_port()}/0")
    try:
        error = await fails_soon("redis", lambda: kv.get("k"))
        assert "redis is unavailable" in str(error)
        await fails_soon("redis", lambda: kv.set("k", "v"))
        await fails_soon("redis", lambda: kv.keys(""))
    finally:
        await kv.close()


async def test_a_redis_prefix_keeps_deployments_apart() -> None:
    url = "redis://127.0.0.1:6379/15"
    plain, first, second = RedisKeyValue(url), RedisKeyValue(url, "t-one:"), RedisKeyValue(url, "t-two:")
    try:
        await first.set("users:alice:x", "1")
        await second.hset("users:alice:x", "f", "2")
        assert await first.get("users:alice:x") == "1"
        assert await second.hget("users:alice:x", "f") == "2"
        assert await first.keys("users:") == ["users:alice:x"]
        assert await plain.get("t-one:users:alice:x") == "1"
        assert await second.delete("users:alice:x") == 1
        assert await first.keys("") == ["users:alice:x"]
    finally:
        await plain.delete("t-one:users:alice:x", "t-two:users:alice:x")
        for kv in (plain, first, second):
            await kv.close()

"""The Litestar store over the KeyValue port that keeps web sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from app.backends.sqlite_kv import SQLiteKeyValue
from app.web.sessions import KeyValueStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[SQLiteKeyValue]:
    kv = SQLiteKeyValue(tmp_path / "kv.db")
    yield kv
    await kv.close()


async def test_values_round_trip(kv: SQLiteKeyValue) -> None:
    store = KeyValueStore(kv, prefix="s:")
    await store.set("a", b'{"uid": "alice"}')
    await store.set("b", "text")
    await store.set("c", b"\xff\x00binary")
    assert await store.get("a") == b'{"uid": "alice"}'
    assert await store.get("b") == b"text"
    assert await store.get("c") == b"\xff\x00binary"
    assert await store.get("missing") is None
    assert await store.exists("a") and not await store.exists("missing")
    assert await kv.keys("s:") == ["s:a", "s:b", "s:c"]


async def test_expiry_and_renewal(kv: SQLiteKeyValue) -> None:
    store = KeyValueStore(kv, prefix="s:")
    await store.set("short", b"x", expires_in=timedelta(milliseconds=50))
    await store.set("long", b"y", expires_in=600)
    await store.set("forever", b"z")
    assert await store.expires_in("long") in (599, 600)
    assert await store.expires_in("forever") is None
    assert await store.expires_in("missing") is None
    assert await store.get("long", renew_for=3600) == b"y"
    assert await store.expires_in("long") in (3599, 3600)
    assert await store.get("forever", renew_for=10) == b"z"
    assert await store.expires_in("forever") is None  # renewing never adds an expiry
    await anyio.sleep(0.1)  # the 50 ms one lapses by itself
    assert await store.get("short") is None
    assert await store.get("long") == b"y"


async def test_delete_and_delete_all_stay_in_the_prefix(kv: SQLiteKeyValue) -> None:
    store = KeyValueStore(kv, prefix="s:")
    await kv.set("other", "kept")
    await store.set("a", b"1")
    await store.set("b", b"2")
    await store.delete("a")
    await store.delete("nothing")  # no error
    assert await store.get("a") is None and await store.get("b") == b"2"
    await store.delete_all()
    assert await kv.keys("s:") == [] and await kv.get("other") == "kept"

"""The KeyValue contract: every adapter of the port passes this suite unchanged.

The Redis adapter runs against the real server at 127.0.0.1:6379 (database 15), once as it
is and once with a key prefix of its own. Each test writes only keys under its own unique
prefix ``ns`` and removes them afterwards, so runs in parallel do not disturb each other.
A production adapter joins by adding a param to ``open_kv``; ``open_kv()`` called again
must reach the same data (reopen).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
import redis.asyncio as redis

from app.backends.redis_kv import RedisKeyValue
from app.backends.sqlite_kv import SQLiteKeyValue
from app.core.ports import KeyValue

pytestmark = pytest.mark.anyio

Opener = Callable[[], KeyValue]
REDIS_URL = "redis://127.0.0.1:6379/15"
TTL = 0.2
PAST_TTL = 0.35


@pytest.fixture
def ns() -> str:
    """A prefix unique to this test; every key a test writes starts with it."""
    return f"test:{uuid.uuid4().hex}:"


async def _redis_answering(client: redis.Redis) -> None:
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as exc:
        await client.aclose()
        pytest.fail(
            f"Redis does not answer at {REDIS_URL} ({exc}); start it: scripts/ensure-redis or redis-server"
        )


@pytest.fixture(params=["sqlite", "redis", "redis-prefixed"])
async def open_kv(request: pytest.FixtureRequest, tmp_path: Path, ns: str) -> AsyncIterator[Opener]:
    opened: list[KeyValue] = []
    admin = None
    if request.param.startswith("redis"):
        admin = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        await _redis_answering(admin)

    def open_() -> KeyValue:
        if request.param == "sqlite":
            kv: KeyValue = SQLiteKeyValue(tmp_path / "data" / "kv.db")
        elif request.param == "redis":
            kv = RedisKeyValue(REDIS_URL)
        else:  # stored as ns + "p:" + key: still under ns, where the clean-up looks
            kv = RedisKeyValue(REDIS_URL, prefix=ns + "p:")
        opened.append(kv)
        return kv

    yield open_
    for kv in opened:
        await kv.close()
    if admin is not None:
        leftovers = [key async for key in admin.scan_iter(match=f"{ns}*")]
        if leftovers:
            await admin.delete(*leftovers)
        await admin.aclose()


@pytest.fixture
def kv(open_kv: Opener) -> KeyValue:
    return open_kv()


def lrange(values: list[str], start: int, stop: int) -> list[str]:
    """LRANGE's documented arithmetic, as a reference."""
    n = len(values)
    start = max(start + n if start < 0 else start, 0)
    stop = stop + n if stop < 0 else stop
    return values[start : stop + 1] if start <= stop else []


async def test_adapter_satisfies_the_port(kv: KeyValue) -> None:
    assert isinstance(kv, KeyValue)


async def test_strings(kv: KeyValue, ns: str) -> None:
    assert await kv.get(ns + "a") is None
    await kv.set(ns + "a", '{"json": "é ✓ 😀"}')
    assert await kv.get(ns + "a") == '{"json": "é ✓ 😀"}'
    await kv.set(ns + "a", "")
    assert await kv.get(ns + "a") == ""


async def test_set_replaces_a_key_of_any_kind(kv: KeyValue, ns: str) -> None:
    await kv.append(ns + "l", "x")
    await kv.hset(ns + "h", "f", "v")
    await kv.set(ns + "l", "now a string")
    await kv.set(ns + "h", "also")
    assert (await kv.get(ns + "l"), await kv.get(ns + "h")) == ("now a string", "also")
    await kv.delete(ns + "l")
    assert await kv.append(ns + "l", "fresh") == 1


async def test_ttl_expiry(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "short", "v", ttl=TTL)
    await kv.set(ns + "kept", "v", ttl=TTL)
    await kv.set(ns + "kept", "v2")  # a plain set clears the expiry
    await kv.set(ns + "long", "v", ttl=60)
    assert await kv.get(ns + "short") == "v"
    assert await kv.keys(ns) == [ns + "kept", ns + "long", ns + "short"]
    await anyio.sleep(PAST_TTL)
    assert await kv.get(ns + "short") is None
    assert await kv.get(ns + "kept") == "v2"
    assert await kv.keys(ns) == [ns + "kept", ns + "long"]
    assert await kv.delete(ns + "short") == 0


async def test_ttl_reports_the_time_left(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "expiring", "v", ttl=30)
    await kv.set(ns + "plain", "v")
    await kv.append(ns + "list", "x")
    await kv.hset(ns + "hash", "f", "v")
    left = await kv.ttl(ns + "expiring")
    assert left is not None and 25 < left <= 30
    for key in ("plain", "list", "hash", "missing"):
        assert await kv.ttl(ns + key) is None, key
    await kv.set(ns + "short", "v", ttl=TTL)
    await anyio.sleep(PAST_TTL)
    assert await kv.ttl(ns + "short") is None


async def test_ttl_must_be_positive(kv: KeyValue, ns: str) -> None:
    for ttl in (0, -1.0):
        with pytest.raises(ValueError):
            await kv.set(ns + "a", "v", ttl=ttl)
        with pytest.raises(ValueError):
            await kv.add(ns + "a", "v", ttl=ttl)
    assert await kv.get(ns + "a") is None


async def test_add_sets_only_absent_keys(kv: KeyValue, ns: str) -> None:
    assert await kv.add(ns + "a", "first") is True
    assert await kv.add(ns + "a", "second") is False
    assert await kv.get(ns + "a") == "first"
    await kv.append(ns + "l", "x")
    await kv.hset(ns + "h", "f", "v")
    assert await kv.add(ns + "l", "s") is False
    assert await kv.add(ns + "h", "s") is False
    assert await kv.items(ns + "l") == ["x"]
    assert await kv.add(ns + "t", "v", ttl=TTL) is True
    assert await kv.add(ns + "t", "v2") is False
    await anyio.sleep(PAST_TTL)
    assert await kv.add(ns + "t", "after expiry") is True  # an expired key counts as absent
    assert await kv.get(ns + "t") == "after expiry"


async def test_add_is_atomic_under_contention(kv: KeyValue, ns: str) -> None:
    won: list[str] = []

    async def claim(who: str) -> None:
        if await kv.add(ns + "lock", who):
            won.append(who)

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(claim, f"w{i}")
    assert len(won) == 1
    assert await kv.get(ns + "lock") == won[0]


async def test_delete_counts_existing_keys_of_any_kind(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "s", "v")
    await kv.append(ns + "l", "a", "b")
    await kv.hset(ns + "h", "f", "v")
    assert await kv.delete(ns + "s", ns + "l", ns + "h", ns + "missing", ns + "s") == 3
    assert await kv.keys(ns) == []
    assert await kv.delete() == 0
    assert await kv.delete(ns + "s") == 0


async def test_incr(kv: KeyValue, ns: str) -> None:
    assert await kv.incr(ns + "n") == 1
    assert await kv.incr(ns + "n", 5) == 6
    assert await kv.incr(ns + "n", -10) == -4
    assert await kv.get(ns + "n") == "-4"
    await kv.set(ns + "m", "41")
    assert await kv.incr(ns + "m") == 42
    assert await kv.incr(ns + "zero", 0) == 0


async def test_incr_keeps_the_expiry(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "n", "1", ttl=TTL)
    assert await kv.incr(ns + "n") == 2
    await anyio.sleep(PAST_TTL)
    assert await kv.get(ns + "n") is None
    assert await kv.incr(ns + "n") == 1


@pytest.mark.parametrize("value", ["abc", "1.5", "", " 1", "01", "-0", "+1", "9223372036854775808"])
async def test_incr_refuses_a_non_integer(kv: KeyValue, ns: str, value: str) -> None:
    await kv.set(ns + "n", value)
    with pytest.raises(ValueError):
        await kv.incr(ns + "n")
    assert await kv.get(ns + "n") == value


async def test_incr_refuses_overflow(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "n", str(2**63 - 1))
    with pytest.raises(ValueError):
        await kv.incr(ns + "n")
    assert await kv.incr(ns + "n", -1) == 2**63 - 2


async def test_concurrent_incr_loses_nothing(kv: KeyValue, ns: str) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(kv.incr, ns + "n")
    assert await kv.get(ns + "n") == "50"


async def test_lists(kv: KeyValue, ns: str) -> None:
    assert await kv.items(ns + "l") == []
    assert await kv.append(ns + "l") == 0  # appending nothing creates nothing
    assert await kv.keys(ns) == []
    assert await kv.append(ns + "l", "a") == 1
    assert await kv.append(ns + "l", "b", "c", "d", "e") == 5
    assert await kv.append(ns + "l") == 5
    assert await kv.items(ns + "l") == ["a", "b", "c", "d", "e"]
    assert await kv.items(ns + "l", 1, 2) == ["b", "c"]
    assert await kv.items(ns + "l", -2) == ["d", "e"]
    assert await kv.items(ns + "l", 0, 0) == ["a"]
    assert await kv.items(ns + "l", -100, 100) == ["a", "b", "c", "d", "e"]
    assert await kv.items(ns + "l", 3, 1) == []
    assert await kv.items(ns + "l", 5, 10) == []


async def test_list_ranges_follow_lrange(kv: KeyValue, ns: str) -> None:
    values = [f"v{i}" for i in range(5)]
    await kv.append(ns + "l", *values)
    for start in range(-7, 8):
        for stop in range(-7, 8):
            assert await kv.items(ns + "l", start, stop) == lrange(values, start, stop), (start, stop)


async def test_concurrent_appends_keep_every_value(kv: KeyValue, ns: str) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(kv.append, ns + "l", f"v{i}")
    got = await kv.items(ns + "l")
    assert sorted(got) == sorted(f"v{i}" for i in range(50))


async def test_hashes(kv: KeyValue, ns: str) -> None:
    assert await kv.hgetall(ns + "h") == {}
    assert await kv.hget(ns + "h", "f") is None
    await kv.hset(ns + "h", "f", "1")
    await kv.hset(ns + "h", "g", "2")
    await kv.hset(ns + "h", "f", "3")
    assert await kv.hget(ns + "h", "f") == "3"
    assert await kv.hget(ns + "h", "missing") is None
    assert await kv.hgetall(ns + "h") == {"f": "3", "g": "2"}
    assert await kv.hdel(ns + "h", "f", "f", "missing") == 1
    assert await kv.hdel(ns + "h") == 0
    assert await kv.hgetall(ns + "h") == {"g": "2"}
    assert await kv.hdel(ns + "h", "g") == 1
    assert await kv.keys(ns) == []  # a hash without fields does not exist
    assert await kv.hdel(ns + "h", "g") == 0


async def test_a_key_holds_one_kind(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "s", "v")
    await kv.append(ns + "l", "x")
    await kv.hset(ns + "h", "f", "v")
    wrong = [
        kv.get(ns + "l"),
        kv.get(ns + "h"),
        kv.incr(ns + "l"),
        kv.append(ns + "s", "x"),
        kv.append(ns + "h", "x"),
        kv.items(ns + "s"),
        kv.items(ns + "h"),
        kv.hset(ns + "s", "f", "v"),
        kv.hset(ns + "l", "f", "v"),
        kv.hget(ns + "l", "f"),
        kv.hgetall(ns + "s"),
        kv.hdel(ns + "l", "f"),
    ]
    for call in wrong:
        with pytest.raises(TypeError):
            await call
    assert (await kv.get(ns + "s"), await kv.items(ns + "l"), await kv.hgetall(ns + "h")) == (
        "v",
        ["x"],
        {"f": "v"},
    )


async def test_an_expired_string_frees_its_key_for_any_kind(kv: KeyValue, ns: str) -> None:
    await kv.set(ns + "a", "v", ttl=TTL)
    await kv.set(ns + "b", "v", ttl=TTL)
    await anyio.sleep(PAST_TTL)
    assert await kv.append(ns + "a", "x") == 1
    await kv.hset(ns + "b", "f", "v")
    assert await kv.hgetall(ns + "b") == {"f": "v"}


async def test_keys_lists_live_keys_of_every_kind_sorted(kv: KeyValue, ns: str) -> None:
    await kv.hset(ns + "user:2", "f", "v")
    await kv.set(ns + "user:1", "v")
    await kv.append(ns + "user:10", "x")
    await kv.set(ns + "users", "v")
    await kv.set(ns + "other", "v")
    assert await kv.keys(ns + "user:") == [ns + "user:1", ns + "user:10", ns + "user:2"]
    assert await kv.keys(ns + "user") == [ns + "user:1", ns + "user:10", ns + "user:2", ns + "users"]
    assert await kv.keys(ns + "nothing") == []
    assert len(await kv.keys(ns)) == 5


async def test_keys_takes_wildcards_in_the_prefix_literally(kv: KeyValue, ns: str) -> None:
    names = [
        "a*b:1",
        "a*b:2",
        "axb:1",
        "a?c",
        "abc",
        "a[b]:1",
        "ab]:1",
        "ab:1",
        "a\\b",
        "a\\\\b",
        "a%b",
        "a_b",
        "A*b:3",
    ]
    for name in names:
        await kv.set(ns + name, "v")
    cases = {
        "a*b": ["a*b:1", "a*b:2"],
        "a?": ["a?c"],
        "a[b]": ["a[b]:1"],
        "a[": ["a[b]:1"],
        "ab]": ["ab]:1"],
        "a\\": ["a\\\\b", "a\\b"],
        "a\\\\": ["a\\\\b"],
        "a%": ["a%b"],
        "a_": ["a_b"],
        "A": ["A*b:3"],
    }
    for prefix, expected in cases.items():
        assert await kv.keys(ns + prefix) == sorted(ns + e for e in expected), prefix


async def test_keys_with_non_ascii_prefixes(kv: KeyValue, ns: str) -> None:
    for name in ("é1", "é😀", "é\U0010ffff", "ê", "e", "😀a", "😀"):
        await kv.set(ns + name, "v")
    assert await kv.keys(ns + "é") == sorted(ns + n for n in ("é1", "é😀", "é\U0010ffff"))
    assert await kv.keys(ns + "😀") == [ns + "😀", ns + "😀a"]
    assert await kv.keys(ns + "é\U0010ffff") == [ns + "é\U0010ffff"]


async def test_data_survives_close_and_reopen(kv: KeyValue, open_kv: Opener, ns: str) -> None:
    await kv.set(ns + "s", "v")
    await kv.set(ns + "t", "v", ttl=60)
    await kv.append(ns + "l", "a", "b")
    await kv.hset(ns + "h", "f", "v")
    await kv.close()
    await kv.close()  # closing twice is harmless
    again = open_kv()
    assert await again.keys(ns) == [ns + "h", ns + "l", ns + "s", ns + "t"]
    assert (await again.get(ns + "s"), await again.items(ns + "l"), await again.hget(ns + "h", "f")) == (
        "v",
        ["a", "b"],
        "v",
    )

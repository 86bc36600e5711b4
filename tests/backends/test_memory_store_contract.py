"""The MemoryStore contract: every adapter of the port passes this suite unchanged.

A production adapter joins by adding a param to ``open_store`` that opens it on fresh,
isolated storage; ``open_store()`` called again must reach the same storage (reopen).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import msgspec
import pytest

from app.backends.sqlite_store import SQLiteMemoryStore
from app.core.models import (
    ActionItem,
    Category,
    Event,
    Geolocation,
    Memory,
    Message,
    PluginResult,
    Structured,
    TranscriptSegment,
)
from app.core.ports import MemoryQuery, MemoryStore

pytestmark = pytest.mark.anyio

Opener = Callable[[], MemoryStore]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "firestore"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[MemoryStore] = []
    firestore = request.getfixturevalue("open_firestore") if request.param == "firestore" else None

    def open_() -> MemoryStore:
        if request.param == "sqlite":
            store: MemoryStore = SQLiteMemoryStore(tmp_path / "data" / "memories.db")
        else:
            store = firestore()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
def store(open_store: Opener) -> MemoryStore:
    return open_store()


def memory(
    memory_id: str,
    *,
    at: timedelta = timedelta(0),
    category: Category = "other",
    discarded: bool = False,
    deleted: bool = False,
    title: str = "",
) -> Memory:
    created = T0 + at
    return Memory(
        id=memory_id,
        created_at=created,
        started_at=created - timedelta(minutes=5),
        finished_at=created,
        structured=Structured(title=title or memory_id, category=category),
        discarded=discarded,
        deleted=deleted,
    )


def ids(memories: list[Memory]) -> list[str]:
    return [m.id for m in memories]


async def test_adapter_satisfies_the_port(store: MemoryStore) -> None:
    assert isinstance(store, MemoryStore)


async def test_round_trip_keeps_every_field(store: MemoryStore) -> None:
    full = Memory(
        id="m1",
        created_at=datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        started_at=T0 - timedelta(minutes=3),
        finished_at=T0,
        source="workflow",
        language="en",
        structured=Structured(
            title="Lunch",
            overview="We talked.",
            emoji="🍜",
            category="social",
            action_items=[ActionItem(description="Book table", completed=True)],
            events=[Event(title="Dinner", start=T0 + timedelta(days=1), duration=60)],
        ),
        transcript_segments=[TranscriptSegment(text="héllo", speaker="SPEAKER_2", start=0.5, end=1.25)],
        geolocation=Geolocation(latitude=52.5, longitude=13.4, address="Berlin"),
        plugins_results=[PluginResult(plugin_id="p", content="ok")],
        external_data={"nested": {"list": [1, 2.5, None, "x"]}},
        postprocessing={"status": "done"},
        visibility="shared",
    )
    await store.put("alice", full)
    got = await store.get("alice", "m1")
    assert got == full
    assert got is not None and got.created_at.utcoffset() is not None


async def test_put_replaces_by_id(store: MemoryStore) -> None:
    await store.put("alice", memory("m1", title="old"))
    await store.put("alice", memory("m1", title="new", at=timedelta(hours=1)))
    got = await store.get("alice", "m1")
    assert got is not None and got.structured.title == "new"
    listed = await store.list("alice", MemoryQuery())
    assert [(m.id, m.structured.title) for m in listed] == [("m1", "new")]


async def test_get_is_per_user_and_returns_deleted(store: MemoryStore) -> None:
    await store.put("alice", memory("m1"))
    await store.put("alice", memory("gone", deleted=True))
    assert await store.get("bob", "m1") is None
    assert await store.get("alice", "missing") is None
    deleted = await store.get("alice", "gone")
    assert deleted is not None and deleted.deleted


async def test_list_is_newest_first_and_pages_without_gaps(store: MemoryStore) -> None:
    hours = list(range(25))
    random.Random(7).shuffle(hours)
    for h in hours:
        await store.put("alice", memory(f"m{h:02d}", at=timedelta(hours=h)))
    expected = [f"m{h:02d}" for h in range(24, -1, -1)]
    pages = [await store.list("alice", MemoryQuery(limit=10, offset=o)) for o in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [m.id for page in pages for m in page] == expected
    assert ids(await store.list("alice", MemoryQuery(limit=3, offset=22))) == expected[22:]


async def test_list_breaks_ties_by_id_descending(store: MemoryStore) -> None:
    for memory_id in ("b", "d", "a", "c"):
        await store.put("alice", memory(memory_id))
    one_by_one = [ids(await store.list("alice", MemoryQuery(limit=1, offset=o))) for o in range(4)]
    assert one_by_one == [["d"], ["c"], ["b"], ["a"]]


async def test_list_orders_by_instant_to_the_microsecond(store: MemoryStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    await store.put("alice", memory("later", at=timedelta(microseconds=1)))
    await store.put("alice", memory("earlier"))
    # The same instant as "later", written in another zone: sorts with it, not by wall clock.
    same = memory("same_instant")
    same.created_at = (T0 + timedelta(microseconds=1)).astimezone(plus_two)
    await store.put("alice", same)
    assert ids(await store.list("alice", MemoryQuery())) == ["same_instant", "later", "earlier"]
    exact = T0 + timedelta(microseconds=1)
    assert ids(await store.list("alice", MemoryQuery(start=exact))) == ["same_instant", "later"]
    assert ids(await store.list("alice", MemoryQuery(end=T0))) == ["earlier"]


async def test_list_never_shows_deleted(store: MemoryStore) -> None:
    await store.put("alice", memory("kept"))
    await store.put("alice", memory("gone", deleted=True, at=timedelta(hours=1)))
    await store.put("alice", memory("gone_discarded", deleted=True, discarded=True))
    for include in (True, False):
        assert ids(await store.list("alice", MemoryQuery(include_discarded=include))) == ["kept"]
    await store.put("alice", memory("kept", deleted=True))
    assert await store.list("alice", MemoryQuery()) == []


async def test_list_includes_deleted_only_when_asked(store: MemoryStore) -> None:
    await store.put("alice", memory("kept", at=timedelta(hours=2)))
    await store.put("alice", memory("gone", deleted=True, at=timedelta(hours=1)))
    await store.put("alice", memory("gone_discarded", deleted=True, discarded=True))
    await store.put("bob", memory("bobs", deleted=True))
    every = MemoryQuery(include_deleted=True)
    assert ids(await store.list("alice", every)) == ["kept", "gone", "gone_discarded"]
    assert ids(await store.list("alice", MemoryQuery(include_deleted=True, limit=1, offset=1))) == ["gone"]
    assert ids(await store.list("bob", every)) == ["bobs"]


async def test_list_filters_discarded_on_request(store: MemoryStore) -> None:
    await store.put("alice", memory("a", at=timedelta(hours=1)))
    await store.put("alice", memory("b", discarded=True))
    assert ids(await store.list("alice", MemoryQuery())) == ["a", "b"]
    assert ids(await store.list("alice", MemoryQuery(include_discarded=False))) == ["a"]
    # Un-discarding by replacing the memory is seen by the filter.
    await store.put("alice", memory("b"))
    assert ids(await store.list("alice", MemoryQuery(include_discarded=False))) == ["a", "b"]


async def test_list_filters_by_category(store: MemoryStore) -> None:
    await store.put("alice", memory("w1", category="work", at=timedelta(hours=2)))
    await store.put("alice", memory("h1", category="health", at=timedelta(hours=1)))
    await store.put("alice", memory("w2", category="work"))
    assert ids(await store.list("alice", MemoryQuery(category="work"))) == ["w1", "w2"]
    assert ids(await store.list("alice", MemoryQuery(category="travel"))) == []


async def test_list_bounds_created_at_inclusively(store: MemoryStore) -> None:
    for h in range(10):
        await store.put("alice", memory(f"m{h}", at=timedelta(hours=h)))
    start, end = T0 + timedelta(hours=2), T0 + timedelta(hours=5)
    assert ids(await store.list("alice", MemoryQuery(start=start, end=end))) == ["m5", "m4", "m3", "m2"]
    assert ids(await store.list("alice", MemoryQuery(start=T0 + timedelta(hours=8)))) == ["m9", "m8"]
    assert ids(await store.list("alice", MemoryQuery(end=T0 + timedelta(hours=1)))) == ["m1", "m0"]
    # Bounds in another zone mean the same instants.
    tokyo = timezone(timedelta(hours=9))
    query = MemoryQuery(start=start.astimezone(tokyo), end=end.astimezone(tokyo))
    assert ids(await store.list("alice", query)) == ["m5", "m4", "m3", "m2"]
    assert await store.list("alice", MemoryQuery(start=end, end=start)) == []


async def test_list_combines_filters_with_pagination(store: MemoryStore) -> None:
    for h in range(20):
        await store.put(
            "alice",
            memory(
                f"m{h:02d}",
                at=timedelta(hours=h),
                category="work" if h % 2 else "other",
                discarded=h % 3 == 0,
            ),
        )
    query = MemoryQuery(
        include_discarded=False, category="work", start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=17)
    )
    # work: odd hours; not discarded: not a multiple of 3; within 2..17 -> 17, 13, 11, 7, 5
    assert ids(await store.list("alice", query)) == ["m17", "m13", "m11", "m07", "m05"]
    page = ids(await store.list("alice", msgspec.structs.replace(query, limit=2, offset=2)))
    assert page == ["m11", "m07"]


async def test_list_json_is_the_page_as_the_contract_json(store: MemoryStore) -> None:
    for i in range(4):
        category: Category = "work" if i % 2 else "health"
        await store.put(
            "alice", memory(f"j{i}", at=timedelta(minutes=i), category=category, discarded=i == 3)
        )
    for query in (
        MemoryQuery(),
        MemoryQuery(limit=2, offset=1),
        MemoryQuery(include_discarded=False, category="work"),
        MemoryQuery(limit=0),
    ):
        page = await store.list_json("alice", query)
        assert msgspec.json.decode(page, type=list[Memory]) == await store.list("alice", query)
        assert page == msgspec.json.encode(await store.list("alice", query))


async def test_list_is_per_user(store: MemoryStore) -> None:
    await store.put("alice", memory("a1"))
    await store.put("bob", memory("b1"))
    await store.put("bob", memory("a1", title="bob's own a1"))
    assert ids(await store.list("alice", MemoryQuery())) == ["a1"]
    assert sorted(ids(await store.list("bob", MemoryQuery()))) == ["a1", "b1"]
    alice_a1 = await store.get("alice", "a1")
    assert alice_a1 is not None and alice_a1.structured.title == "a1"
    assert await store.list("carol", MemoryQuery()) == []


async def test_get_many_keeps_the_asked_order_and_skips_the_rest(store: MemoryStore) -> None:
    for name in ("a", "b", "c"):
        await store.put("alice", memory(name))
    await store.put("alice", memory("gone", deleted=True))
    await store.put("bob", memory("bobs"))
    got = await store.get_many("alice", ["c", "missing", "a", "gone", "bobs", "b"])
    assert ids(got) == ["c", "a", "b"]
    assert await store.get_many("alice", []) == []
    assert await store.get_many("bob", ["a"]) == []


async def test_get_many_handles_many_ids(store: MemoryStore) -> None:
    wanted = [f"m{i:04d}" for i in range(1200)]
    async with anyio.create_task_group() as tg:
        for name in wanted[::2]:
            tg.start_soon(store.put, "alice", memory(name))
    reversed_ids = wanted[::-1]
    assert ids(await store.get_many("alice", reversed_ids)) == [
        i for i in reversed_ids if int(i[1:]) % 2 == 0
    ]


async def test_messages_are_newest_first_per_user(store: MemoryStore) -> None:
    for i in (3, 1, 4, 0, 2):
        await store.put_message(
            "alice", Message(id=f"q{i}", text=f"t{i}", created_at=T0 + timedelta(seconds=i))
        )
    await store.put_message("bob", Message(id="q9", text="bob", created_at=T0))
    assert [m.id for m in await store.list_messages("alice")] == ["q4", "q3", "q2", "q1", "q0"]
    assert [m.id for m in await store.list_messages("alice", limit=2, offset=1)] == ["q3", "q2"]
    assert [m.id for m in await store.list_messages("bob")] == ["q9"]
    assert await store.list_messages("carol") == []


async def test_uids_are_every_user_with_memories_or_messages(store: MemoryStore) -> None:
    assert await store.uids() == []
    await store.put("carol", memory("c1"))
    await store.put("alice", memory("a1", deleted=True))
    await store.put_message("bob", Message(id="q", text="only a message", created_at=T0))
    await store.put("alice", memory("a2"))
    assert await store.uids() == ["alice", "bob", "carol"]


async def test_message_round_trip_and_replace(store: MemoryStore) -> None:
    first = Message(id="x", text="hi", created_at=T0, sender="human", memories_id=["m1", "m2"])
    await store.put_message("alice", first)
    assert await store.list_messages("alice") == [first]
    second = Message(id="x", text="edited", created_at=T0 + timedelta(minutes=1), plugin_id="p")
    await store.put_message("alice", second)
    assert await store.list_messages("alice") == [second]


async def test_concurrent_puts_all_land(store: MemoryStore) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(store.put, "alice", memory(f"m{i:02d}", at=timedelta(seconds=i)))
    assert ids(await store.list("alice", MemoryQuery(limit=100))) == [f"m{i:02d}" for i in range(49, -1, -1)]


async def test_data_survives_close_and_reopen(store: MemoryStore, open_store: Opener) -> None:
    await store.put("alice", memory("m1", category="work"))
    await store.put("alice", memory("m2", deleted=True))
    await store.put_message("alice", Message(id="q", text="hello", created_at=T0))
    await store.close()
    await store.close()  # closing twice is harmless
    reopened = open_store()
    assert ids(await reopened.list("alice", MemoryQuery(category="work"))) == ["m1"]
    gone = await reopened.get("alice", "m2")
    assert gone is not None and gone.deleted
    assert [m.text for m in await reopened.list_messages("alice")] == ["hello"]

"""The Pinecone adapter and the fake data plane it is proven against, both driven by the real SDK.

The port's behaviour (ranking, filters by user and date, delete exactness, reopen) is the
VectorIndex contract suite's job; here: the fake's wire format and filter language, what
the adapter writes and sends, and how it fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pinecone import AsyncIndex, Index
from pinecone.errors.exceptions import ApiError, UnauthorizedError

from app.backends.pinecone_index import PineconeVectorIndex
from app.core.errors import BackendUnavailable
from app.core.ports import VectorIndex, VectorItem
from tests.fakes import pinecone_server as fakes
from tests.fakes.pinecone_server import FakePinecone, FilterError, matches, open_pinecone_index

pinecone_fake = fakes.pinecone_fake
pinecone_index = fakes.pinecone_index

KEY = fakes.PINECONE_KEY

# --- the filter language, in the fake itself --------------------------------------------

RECORDS: dict[str, dict[str, Any]] = {
    "a": {"genre": "drama", "year": 2019, "rating": 7.5, "tags": ["x", "y"], "live": True},
    "b": {"genre": "comedy", "year": 2021, "rating": 6, "live": False},
    "c": {"genre": "drama", "year": 2021, "tags": ["z"]},
    "d": {},
}
FILTERS: list[tuple[dict[str, Any], set[str]]] = [
    ({"genre": "drama"}, {"a", "c"}),  # the implicit $eq
    ({"genre": {"$eq": "comedy"}}, {"b"}),
    ({"genre": {"$ne": "drama"}}, {"b", "d"}),  # a missing field is "not equal"
    ({"year": {"$gt": 2019}}, {"b", "c"}),
    ({"year": {"$gte": 2019}}, {"a", "b", "c"}),
    ({"year": {"$lt": 2021}}, {"a"}),
    ({"year": {"$lte": 2021}}, {"a", "b", "c"}),
    ({"rating": {"$gte": 6.5}}, {"a"}),
    ({"rating": {"$lte": 6.0}}, {"b"}),  # 6 and 6.0 are one number
    ({"year": {"$gte": 2019, "$lt": 2021}}, {"a"}),  # two operators on one field
    ({"genre": {"$in": ["comedy", "horror"]}}, {"b"}),
    ({"genre": {"$nin": ["comedy"]}}, {"a", "c", "d"}),
    ({"tags": "y"}, {"a"}),  # a list field matches when an element does
    ({"tags": {"$in": ["z", "q"]}}, {"c"}),
    ({"tags": {"$nin": ["x"]}}, {"b", "c", "d"}),
    ({"tags": {"$ne": "z"}}, {"a", "b", "d"}),
    ({"live": True}, {"a"}),
    ({"live": 1}, set()),  # typed: true is not 1
    ({"year": "2019"}, set()),  # typed: a string is not a number
    ({"genre": {"$gt": 1}}, set()),  # a range on a string field holds nowhere
    ({"tags": {"$exists": True}}, {"a", "c"}),
    ({"tags": {"$exists": False}}, {"b", "d"}),
    ({"genre": "drama", "year": 2021}, {"c"}),  # fields side by side are ANDed
    ({"$and": [{"genre": "drama"}, {"year": {"$lt": 2020}}]}, {"a"}),
    ({"$or": [{"genre": "comedy"}, {"tags": "z"}]}, {"b", "c"}),
    ({"$or": [{"$and": [{"genre": "drama"}, {"year": 2021}]}, {"live": False}]}, {"b", "c"}),
    (
        {"$and": [{"$or": [{"year": 2019}, {"year": 2021}]}, {"$or": [{"live": True}, {"tags": "z"}]}]},
        {"a", "c"},
    ),
    (
        {"$and": [{"$or": [{"genre": "drama"}, {"genre": "comedy"}]}, {"rating": {"$exists": True}}]},
        {"a", "b"},
    ),
]
MALFORMED: list[Any] = [
    {"year": {"$gt": "2019"}},
    {"year": {"$gte": True}},
    {"genre": {"$in": "drama"}},
    {"genre": {"$nin": [["x"]]}},
    {"genre": {"$eq": ["drama"]}},
    {"tags": {"$exists": "yes"}},
    {"year": {"$between": [1, 2]}},
    {"year": {}},
    {"$and": []},
    {"$or": {"genre": "drama"}},
    {"$not": {"genre": "drama"}},
    ["genre", "drama"],
]


@pytest.mark.parametrize(("flt", "expected"), FILTERS)
def test_filter_operators(flt: dict[str, Any], expected: set[str]) -> None:
    assert {rid for rid, metadata in RECORDS.items() if matches(metadata, flt)} == expected


@pytest.mark.parametrize("flt", MALFORMED)
def test_malformed_filters_are_refused(flt: Any) -> None:
    with pytest.raises(FilterError):
        matches(RECORDS["a"], flt)


@pytest.fixture(scope="module")
def loaded_fake() -> Iterator[FakePinecone]:
    """One fake holding RECORDS (each with a distinct vector), written through the sync SDK."""
    with FakePinecone() as fake:
        index = Index(host=fake.url, api_key=KEY)
        vectors = [
            (rid, (np.eye(4)[i] + 0.1).tolist(), metadata)
            for i, (rid, metadata) in enumerate(RECORDS.items())
        ]
        assert index.upsert(vectors=vectors).upserted_count == 4
        index.close()
        yield fake


@pytest.mark.anyio
@pytest.mark.parametrize(("flt", "expected"), FILTERS)
async def test_filters_through_the_sdk(
    loaded_fake: FakePinecone, flt: dict[str, Any], expected: set[str]
) -> None:
    async with AsyncIndex(host=loaded_fake.url, api_key=KEY) as index:
        response = await index.query(vector=[1.0, 1.0, 1.0, 1.0], top_k=10, filter=flt)
    assert {m.id for m in response.matches} == expected


@pytest.mark.anyio
@pytest.mark.parametrize("flt", MALFORMED[:-1])
async def test_malformed_filters_are_400s_through_the_sdk(loaded_fake: FakePinecone, flt: Any) -> None:
    async with AsyncIndex(host=loaded_fake.url, api_key=KEY) as index:
        with pytest.raises(ApiError) as caught:
            await index.query(vector=[1.0, 0.0, 0.0, 0.0], top_k=3, filter=flt)
    assert caught.value.status_code == 400
    assert "Invalid filter" in caught.value.message


# --- the fake's wire format, through the SDK ---------------------------------------------


@pytest.mark.anyio
async def test_fake_speaks_the_sdks_wire_format(pinecone_fake: FakePinecone) -> None:
    async with AsyncIndex(host=pinecone_fake.url, api_key=KEY) as index:
        await index.upsert(vectors=[("v1", [1.0, 0.0], {"k": "a"}), ("v2", [0.0, 2.0], {"k": "b"})])
        await index.upsert(vectors=[{"id": "v1", "values": [3.0, 4.0]}], namespace="other")
        query = await index.query(vector=[1.0, 1.0], top_k=1, include_values=True, include_metadata=True)
        fetched = await index.fetch(ids=["v1", "v2", "v404"])
        stats = await index.describe_index_stats()
        await index.delete(ids=["v2"])
        await index.delete(delete_all=True, namespace="other")
        after = await index.describe_index_stats()
    assert [(m.id, m.values, m.metadata) for m in query.matches] == [("v1", [1.0, 0.0], {"k": "a"})]
    assert query.matches[0].score == pytest.approx(2**-0.5)
    assert set(fetched.vectors) == {"v1", "v2"}
    assert fetched.vectors["v2"].metadata == {"k": "b"}
    assert stats.dimension == 2
    assert stats.total_vector_count == 3
    assert {name: s.vector_count for name, s in stats.namespaces.items()} == {"__default__": 2, "other": 1}
    assert {name: s.vector_count for name, s in after.namespaces.items()} == {"__default__": 1}
    upsert = pinecone_fake.requests_to("/vectors/upsert")[0]
    assert upsert.headers["api-key"] == KEY
    assert upsert.headers["x-pinecone-api-version"]
    assert upsert.json["vectors"][0] == {"id": "v1", "values": [1.0, 0.0], "metadata": {"k": "a"}}
    assert pinecone_fake.requests_to("/vectors/fetch")[0].query["ids"] == ["v1", "v2", "v404"]
    assert pinecone_fake.requests_to("/query")[0].json["topK"] == 1


@pytest.mark.anyio
async def test_fake_checks_the_api_key(pinecone_fake: FakePinecone) -> None:
    async with AsyncIndex(host=pinecone_fake.url, api_key="wrong") as index:
        with pytest.raises(UnauthorizedError):
            await index.describe_index_stats()


@pytest.mark.anyio
async def test_fake_refuses_a_wrong_dimension_and_zero_vectors(pinecone_fake: FakePinecone) -> None:
    async with AsyncIndex(host=pinecone_fake.url, api_key=KEY) as index:
        await index.upsert(vectors=[("v1", [1.0, 0.0, 0.0])])
        for values in ([1.0, 0.0], [0.0, 0.0, 0.0]):
            with pytest.raises(ApiError) as caught:
                await index.upsert(vectors=[("v2", values)])
            assert caught.value.status_code == 400
    assert set(pinecone_fake.stored()) == {"v1"}


# --- the adapter -------------------------------------------------------------------------


def vector_item(uid: str, memory_id: str, values: list[float], created_at: int = 1_700_000_000) -> VectorItem:
    return VectorItem(
        id=f"{uid}-{memory_id}", values=values, uid=uid, memory_id=memory_id, created_at=created_at
    )


@pytest.mark.anyio
async def test_adapter_satisfies_the_port(pinecone_index: PineconeVectorIndex) -> None:
    assert isinstance(pinecone_index, VectorIndex)


@pytest.mark.anyio
async def test_ids_and_metadata_as_stored(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex
) -> None:
    await pinecone_index.upsert(
        [vector_item("alice", "m1", [0.5, 0.25], 1_700_000_001), vector_item("bob-2", "m-9", [1.0, 0.0])]
    )
    assert pinecone_fake.stored() == {
        "alice-m1": {
            "values": [0.5, 0.25],
            "metadata": {"uid": "alice", "memory_id": "m1", "created_at": 1_700_000_001},
        },
        "bob-2-m-9": {
            "values": [1.0, 0.0],
            "metadata": {"uid": "bob-2", "memory_id": "m-9", "created_at": 1_700_000_000},
        },
    }
    created_at = pinecone_fake.requests_to("/vectors/upsert")[0].json["vectors"][0]["metadata"]["created_at"]
    assert type(created_at) is int


@pytest.mark.anyio
async def test_query_filters_by_uid_and_dates(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex
) -> None:
    await pinecone_index.upsert(
        [vector_item("alice", f"m{i}", [1.0, float(i)], created_at=100 + i) for i in range(5)]
    )
    await pinecone_index.upsert([vector_item("bob", "m0", [1.0, 0.0], created_at=100)])
    query = np.array([1.0, 0.0], dtype=np.float32)
    everything = await pinecone_index.query(query, uid="alice", top_k=10)
    bounded = await pinecone_index.query(query, uid="alice", top_k=10, start=101, end=103)
    assert [(m.id, m.memory_id) for m in everything] == [(f"alice-m{i}", f"m{i}") for i in range(5)]
    assert everything[0].score == pytest.approx(1.0)
    assert [m.memory_id for m in bounded] == ["m1", "m2", "m3"]
    sent = [r.json for r in pinecone_fake.requests_to("/query")]
    assert sent[0]["filter"] == {"uid": {"$eq": "alice"}}
    assert sent[1]["filter"] == {
        "$and": [{"uid": {"$eq": "alice"}}, {"created_at": {"$gte": 101}}, {"created_at": {"$lte": 103}}]
    }
    assert sent[0]["includeMetadata"] is True
    assert sent[0]["topK"] == 10


@pytest.mark.anyio
async def test_delete_sends_exactly_the_ids(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex
) -> None:
    await pinecone_index.upsert([vector_item("alice", m, [1.0, 0.5]) for m in ("1", "10", "11")])
    await pinecone_index.delete(["alice-1", "alice-404", "alice-1"])
    await pinecone_index.delete([])
    deletes = pinecone_fake.requests_to("/vectors/delete")
    assert [r.json for r in deletes] == [{"namespace": "", "ids": ["alice-1", "alice-404"]}]
    assert set(pinecone_fake.stored()) == {"alice-10", "alice-11"}


@pytest.mark.anyio
async def test_large_writes_are_split_within_the_service_limits(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex
) -> None:
    items = [vector_item("alice", f"m{i}", [1.0, float(i)]) for i in range(2500)]
    await pinecone_index.upsert(items)
    await pinecone_index.delete([it.id for it in items])
    assert [len(r.json["vectors"]) for r in pinecone_fake.requests_to("/vectors/upsert")] == [1000, 1000, 500]
    assert [len(r.json["ids"]) for r in pinecone_fake.requests_to("/vectors/delete")] == [1000, 1000, 500]
    assert pinecone_fake.stored() == {}


@pytest.mark.anyio
async def test_namespace(pinecone_fake: FakePinecone) -> None:
    index = open_pinecone_index(pinecone_fake, namespace="omi")
    try:
        await index.upsert([vector_item("alice", "m1", [1.0, 0.0])])
        assert [m.id for m in await index.query(np.array([1.0, 0.0]), uid="alice", top_k=1)] == ["alice-m1"]
    finally:
        await index.close()
    assert set(pinecone_fake.stored("omi")) == {"alice-m1"}
    assert pinecone_fake.stored() == {}


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_failures_are_retried(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex, status: int
) -> None:
    await pinecone_index.upsert([vector_item("alice", "m1", [1.0, 0.0])])
    pinecone_fake.fail_next(2, status=status, retry_after=0.01 if status == 429 else None)
    got = await pinecone_index.query(np.array([1.0, 0.0]), uid="alice", top_k=1)
    assert [m.id for m in got] == ["alice-m1"]
    assert len(pinecone_fake.requests_to("/query")) == 3


@pytest.mark.anyio
async def test_a_429s_retry_after_is_honoured(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex
) -> None:
    pinecone_fake.fail_next(1, status=429, retry_after=0.3)
    began = time.monotonic()
    await pinecone_index.delete(["alice-m1"])
    assert time.monotonic() - began >= 0.3


@pytest.mark.anyio
async def test_persistent_failure_is_backend_unavailable(
    pinecone_fake: FakePinecone, pinecone_index: PineconeVectorIndex
) -> None:
    pinecone_fake.fail_next(10, status=500)
    with pytest.raises(BackendUnavailable) as caught:
        await pinecone_index.upsert([vector_item("alice", "m1", [1.0, 0.0])])
    assert caught.value.backend == "pinecone"
    assert caught.value.cause is not None
    # Three tries in all: the SDK's own transport retries are off, so they do not multiply.
    assert len(pinecone_fake.requests_to("/vectors/upsert")) == 3
    assert pinecone_fake.stored() == {}


@pytest.mark.anyio
async def test_a_stall_is_backend_unavailable_within_the_timeout(pinecone_fake: FakePinecone) -> None:
    index = open_pinecone_index(pinecone_fake, timeout=0.3, tries=2)
    pinecone_fake.stall_next(5, seconds=30)
    began = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await index.query(np.array([1.0, 0.0]), uid="alice", top_k=1)
    finally:
        await index.close()
    assert time.monotonic() - began < 2.0  # two tries of 0.3 s and a short backoff, not 30 s
    assert isinstance(caught.value.cause, TimeoutError)
    assert len(pinecone_fake.requests_to("/query")) == 2


@pytest.mark.anyio
async def test_a_refused_key_is_backend_unavailable_at_once(pinecone_fake: FakePinecone) -> None:
    index = PineconeVectorIndex("wrong-key", pinecone_fake.url, backoff=0.01)
    try:
        with pytest.raises(BackendUnavailable, match="pinecone"):
            await index.delete(["alice-m1"])
    finally:
        await index.close()
    assert len(pinecone_fake.requests) == 1


@pytest.mark.anyio
async def test_a_malformed_request_is_a_value_error(pinecone_index: PineconeVectorIndex) -> None:
    await pinecone_index.upsert([vector_item("alice", "m1", [1.0, 0.0])])
    with pytest.raises(ValueError, match="dimension"):
        await pinecone_index.upsert([vector_item("alice", "m2", [1.0, 0.0, 0.0])])
    with pytest.raises(ValueError):
        await pinecone_index.upsert([vector_item("alice", "é", [1.0, 0.0])])  # ids are ASCII on Pinecone

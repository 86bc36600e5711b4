"""The Firestore adapter beyond the MemoryStore contract, on the real emulator.

Where documents lie, how values are stored, and transcripts past Firestore's 1 MiB document
limit: compressed, then chunked, read back whole, never leaving stale chunks behind.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from google.cloud.firestore import AsyncClient, AsyncDocumentReference, DocumentSnapshot
from google.cloud.firestore_v1.base_query import FieldFilter

from app.backends.firestore_store import MAX_CHUNKS, FirestoreMemoryStore
from app.core.models import Memory, Message, Structured, TranscriptSegment
from app.core.ports import MemoryQuery

if TYPE_CHECKING:
    from tests.backends.emulators import FirestoreEmulator

pytest_plugins = ["tests.backends.emulators"]
pytestmark = pytest.mark.anyio

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def raw(firestore_client: AsyncClient) -> AsyncClient:
    return firestore_client


def memory(
    memory_id: str, segments: list[TranscriptSegment] | None = None, at: datetime = T0, **fields: Any
) -> Memory:
    return Memory(
        id=memory_id,
        created_at=at,
        started_at=at - timedelta(minutes=5),
        finished_at=at,
        structured=Structured(title=memory_id, category="work"),
        transcript_segments=segments or [],
        **fields,
    )


def random_segments(megabytes: float, seed: int = 1) -> list[TranscriptSegment]:
    """Segments of random hex text (compressing to about half), ``megabytes`` of text in all."""
    rng = random.Random(seed)
    count = int(megabytes * 1000)
    return [
        TranscriptSegment(text=rng.randbytes(500).hex(), speaker=f"SPEAKER_{i % 3}", start=i, end=i + 1.5)
        for i in range(count)
    ]


def repetitive_segments(megabytes: float) -> list[TranscriptSegment]:
    line = "so we agreed to meet again on tuesday to go over the numbers once more. " * 13
    return [TranscriptSegment(text=line[:1000], start=i, end=i + 1) for i in range(int(megabytes * 1000))]


def doc(raw: AsyncClient, memory_id: str, uid: str = "alice") -> AsyncDocumentReference:
    return raw.collection("users", uid, "memories").document(memory_id)


async def read(raw: AsyncClient, ref: AsyncDocumentReference) -> DocumentSnapshot[AsyncDocumentReference]:
    """``ref.get()`` without its flaw: that returns before its gRPC stream ends, and the stream's
    late end then lands on a closed event loop."""
    snapshots = [s async for s in raw.get_all([ref])]
    return snapshots[0]


async def chunk_ids(raw: AsyncClient, memory_id: str) -> list[str]:
    return sorted(s.id for s in await doc(raw, memory_id).collection("transcript_chunks").get())


async def test_documents_lie_where_the_contract_says(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    await firestore_store.put("alice", memory("m1"))
    await firestore_store.put_message("alice", Message(id="q1", text="hi", created_at=T0))
    stored = (await read(raw, doc(raw, "m1"))).to_dict()
    assert stored is not None
    assert stored["id"] == "m1" and stored["structured"]["title"] == "m1"
    assert stored["category"] == "work" and stored["structured"]["category"] == "work"
    assert stored["deleted"] is False and stored["discarded"] is False
    assert stored["transcript_segments"] == [] and stored["transcript_chunks"] == 0
    message = (await read(raw, raw.collection("users", "alice", "messages").document("q1"))).to_dict()
    assert message is not None and message["text"] == "hi"


async def test_times_are_firestore_timestamps(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    for h in range(3):
        await firestore_store.put("alice", memory(f"m{h}", at=T0 + timedelta(hours=h)))
    stored = (await read(raw, doc(raw, "m1"))).to_dict()
    assert stored is not None
    assert isinstance(stored["created_at"], datetime) and stored["created_at"] == T0 + timedelta(hours=1)
    assert isinstance(stored["started_at"], datetime) and isinstance(stored["finished_at"], datetime)
    # The SDK's own range query on the field works, so the values are timestamps, not strings.
    later = raw.collection("users", "alice", "memories").where(filter=FieldFilter("created_at", ">", T0))
    assert sorted(s.id for s in await later.get()) == ["m1", "m2"]


async def test_small_transcript_is_a_native_array(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    segment = TranscriptSegment(text="hello", speaker="SPEAKER_1", start=0.5, end=1.0)
    await firestore_store.put("alice", memory("m1", [segment]))
    stored = (await read(raw, doc(raw, "m1"))).to_dict()
    assert stored is not None and stored["transcript_segments_compressed"] is False
    assert stored["transcript_segments"][0]["text"] == "hello"


async def test_large_compressible_transcript_is_compressed_in_place(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    big = memory("m1", repetitive_segments(3))
    await firestore_store.put("alice", big)
    stored = (await read(raw, doc(raw, "m1"))).to_dict()
    assert stored is not None and stored["transcript_segments_compressed"] is True
    assert isinstance(stored["transcript_segments"], bytes) and stored["transcript_chunks"] == 0
    assert await chunk_ids(raw, "m1") == []
    assert await firestore_store.get("alice", "m1") == big


async def test_3mb_transcript_is_chunked_and_read_back_whole(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    big = memory("m1", random_segments(3))
    await firestore_store.put("alice", big)
    stored = (await read(raw, doc(raw, "m1"))).to_dict()
    assert stored is not None and stored["transcript_chunks"] == 2
    assert await chunk_ids(raw, "m1") == ["0", "1"]
    assert await firestore_store.get("alice", "m1") == big
    assert await firestore_store.get_many("alice", ["m1"]) == [big]
    assert await firestore_store.list("alice", MemoryQuery()) == [big]


async def test_shrinking_a_transcript_leaves_no_stale_chunks(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    await firestore_store.put("alice", memory("m1", random_segments(3.8, seed=2)))
    assert await chunk_ids(raw, "m1") == ["0", "1", "2"]
    smaller = memory("m1", random_segments(3, seed=3))
    await firestore_store.put("alice", smaller)
    assert await chunk_ids(raw, "m1") == ["0", "1"]
    assert await firestore_store.get("alice", "m1") == smaller
    small = memory("m1", [TranscriptSegment(text="short now")])
    await firestore_store.put("alice", small)
    assert await chunk_ids(raw, "m1") == []
    assert await firestore_store.get("alice", "m1") == small


async def test_a_reader_that_catches_a_newer_write_reads_again(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    await firestore_store.put("alice", memory("m1", random_segments(3, seed=4)))
    stale = await read(raw, doc(raw, "m1"))  # the memory as a reader saw it before the next write
    newer = memory("m1", random_segments(3, seed=5))
    await firestore_store.put("alice", newer)
    assert await firestore_store._load(stale) == newer  # not old fields with new chunks


async def test_a_transcript_beyond_every_chunk_is_refused_and_writes_nothing(
    firestore_store: FirestoreMemoryStore, raw: AsyncClient
) -> None:
    too_big = memory("m1", random_segments(2 * MAX_CHUNKS, seed=6))
    with pytest.raises(ValueError, match="over the limit"):
        await firestore_store.put("alice", too_big)
    assert await firestore_store.get("alice", "m1") is None
    assert await chunk_ids(raw, "m1") == []


async def test_free_form_data_firestore_cannot_hold_is_kept_as_json(
    firestore_store: FirestoreMemoryStore,
) -> None:
    odd = memory(
        "m1", external_data={"": 1, "grid": [[1, 2], [3]], "big": 2**70}, postprocessing={"__x__": 0}
    )
    await firestore_store.put("alice", odd)
    assert await firestore_store.get("alice", "m1") == odd


async def test_ids_firestore_cannot_address(firestore_store: FirestoreMemoryStore) -> None:
    for bad in ("a/b", "", "..", "__id__"):
        assert await firestore_store.get("alice", bad) is None
        assert await firestore_store.get(bad, "m1") is None
        with pytest.raises(ValueError):
            await firestore_store.put("alice", memory(bad))
    assert await firestore_store.get_many("alice", ["a/b", ""]) == []
    assert await firestore_store.list("a/b", MemoryQuery()) == []


async def test_reset_empties_the_emulator(
    firestore_store: FirestoreMemoryStore, firestore_emulator: FirestoreEmulator
) -> None:
    await firestore_store.put("alice", memory("m1"))
    await firestore_store.put_message("alice", Message(id="q", text="x", created_at=T0))
    firestore_emulator.reset()
    assert await firestore_store.get("alice", "m1") is None
    assert await firestore_store.list_messages("alice") == []


async def test_each_test_starts_on_an_empty_emulator(firestore_store: FirestoreMemoryStore) -> None:
    # Every other test here writes for "alice"; none of it is left.
    assert await firestore_store.list("alice", MemoryQuery()) == []
    assert await firestore_store.get("alice", "m1") is None

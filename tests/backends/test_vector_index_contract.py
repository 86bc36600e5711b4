"""The VectorIndex contract: every adapter of the port passes this suite unchanged.

A production adapter joins by adding a param to ``open_index`` that opens it on a fresh,
empty index; ``open_index()`` called again must reach the same index (reopen). Expected
results come from a brute-force NumPy cosine search over the same vectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt
import pytest

from app.backends.numpy_index import NumpyVectorIndex
from app.core.ports import VectorIndex, VectorItem, VectorMatch
from tests.fakes.pinecone_server import open_pinecone_index

pytestmark = pytest.mark.anyio

Opener = Callable[[], VectorIndex]
DIM = 32
Model = dict[str, tuple[str, int, npt.NDArray[np.float32]]]  # id -> (uid, created_at, vector)


@pytest.fixture(params=["numpy", "pinecone"])
async def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[VectorIndex] = []
    fake = request.getfixturevalue("pinecone_fake") if request.param == "pinecone" else None

    def open_() -> VectorIndex:
        if request.param == "numpy":
            index: VectorIndex = NumpyVectorIndex(tmp_path / "data" / "vectors.db")
        else:
            index = open_pinecone_index(fake)
        opened.append(index)
        return index

    yield open_
    for index in opened:
        await index.close()


@pytest.fixture
def index(open_index: Opener) -> VectorIndex:
    return open_index()


def random_vectors(n: int, seed: int, dim: int = DIM) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    # Rows of very different lengths: only their directions may matter.
    scale = rng.uniform(0.01, 100, size=(n, 1))
    return (rng.standard_normal((n, dim)) * scale).astype(np.float32)


def item(uid: str, memory_id: str, vector: Iterable[float], created_at: int = 1_700_000_000) -> VectorItem:
    return VectorItem(
        id=f"{uid}-{memory_id}",
        values=[float(x) for x in vector],
        uid=uid,
        memory_id=memory_id,
        created_at=created_at,
    )


def brute_force(
    model: Model,
    query: npt.NDArray[np.float32],
    uid: str,
    top_k: int,
    start: int | None = None,
    end: int | None = None,
) -> list[tuple[str, float]]:
    rows = [
        (vid, vec)
        for vid, (owner, created, vec) in model.items()
        if owner == uid and (start is None or created >= start) and (end is None or created <= end)
    ]
    q = query.astype(np.float64) / np.linalg.norm(query)
    scored = [(vid, float(vec.astype(np.float64) @ q / np.linalg.norm(vec))) for vid, vec in rows]
    return sorted(scored, key=lambda pair: -pair[1])[:top_k]


def assert_matches(got: list[VectorMatch], expected: list[tuple[str, float]]) -> None:
    assert [m.id for m in got] == [vid for vid, _ in expected]
    assert [m.score for m in got] == pytest.approx([score for _, score in expected], abs=1e-5)
    assert all(isinstance(m.score, float) for m in got)


async def load(index: VectorIndex, uid: str, vectors: npt.NDArray[np.float32], base: int = 1000) -> Model:
    items = [item(uid, f"m{i}", v, created_at=base + i) for i, v in enumerate(vectors)]
    await index.upsert(items)
    return {it.id: (uid, it.created_at, np.asarray(it.values, dtype=np.float32)) for it in items}


async def test_adapter_satisfies_the_port(index: VectorIndex) -> None:
    assert isinstance(index, VectorIndex)


async def test_ranking_matches_brute_force_cosine(index: VectorIndex) -> None:
    model = await load(index, "alice", random_vectors(300, seed=1))
    model |= await load(index, "bob", random_vectors(100, seed=2))
    for query in random_vectors(5, seed=3):
        for top_k in (1, 7, 50):
            got = await index.query(query, uid="alice", top_k=top_k)
            assert_matches(got, brute_force(model, query, "alice", top_k))
            assert {m.memory_id for m in got} <= {f"m{i}" for i in range(300)}


async def test_scores_are_cosine_similarities(index: VectorIndex) -> None:
    e = np.eye(DIM, dtype=np.float32)
    await index.upsert(
        [item("alice", "same", e[0] * 5), item("alice", "opposite", -e[0]), item("alice", "ortho", e[1])]
    )
    got = await index.query(e[0] * 0.001, uid="alice", top_k=3)
    assert [m.memory_id for m in got] == ["same", "ortho", "opposite"]
    assert [m.score for m in got] == pytest.approx([1.0, 0.0, -1.0], abs=1e-6)


async def test_top_k_bounds(index: VectorIndex) -> None:
    model = await load(index, "alice", random_vectors(5, seed=4))
    query = random_vectors(1, seed=5)[0]
    assert_matches(await index.query(query, uid="alice", top_k=100), brute_force(model, query, "alice", 100))
    assert await index.query(query, uid="alice", top_k=0) == []


async def test_created_at_bounds_are_inclusive(index: VectorIndex) -> None:
    model = await load(index, "alice", random_vectors(40, seed=6), base=1000)  # created_at 1000..1039
    query = random_vectors(1, seed=7)[0]
    for start, end in [
        (1005, 1010),
        (1005, None),
        (None, 1003),
        (1039, 1039),
        (1000, 1000),
        (2000, None),
        (1010, 1005),
    ]:
        got = await index.query(query, uid="alice", top_k=100, start=start, end=end)
        assert_matches(got, brute_force(model, query, "alice", 100, start, end))
    got = await index.query(query, uid="alice", top_k=3, start=1010, end=1030)
    assert_matches(got, brute_force(model, query, "alice", 3, 1010, 1030))


async def test_users_are_isolated(index: VectorIndex) -> None:
    vectors = random_vectors(10, seed=8)
    # uids that are prefixes of each other, with '-' in them, and the same vectors.
    model = await load(index, "a", vectors)
    model |= await load(index, "a-b", vectors)
    query = vectors[3]
    for uid in ("a", "a-b"):
        got = await index.query(query, uid=uid, top_k=10)
        assert {m.id for m in got} == {f"{uid}-m{i}" for i in range(10)}
        assert_matches(got[:1], brute_force(model, query, uid, 1))
    assert await index.query(query, uid="nobody", top_k=10) == []
    await index.delete(["a-b-m3"])
    assert len(await index.query(query, uid="a", top_k=10)) == 10
    assert "a-b-m3" not in {m.id for m in await index.query(query, uid="a-b", top_k=10)}


async def test_delete_removes_exactly_the_given_ids(index: VectorIndex) -> None:
    vectors = random_vectors(5, seed=9)
    names = ["1", "10", "1x", "11", "2"]
    await index.upsert([item("alice", n, v) for n, v in zip(names, vectors, strict=True)])
    query = vectors[0]
    assert len(await index.query(query, uid="alice", top_k=10)) == 5  # warm any cache first
    await index.delete(["alice-1", "alice-404", "bob-10", "alice-1"])
    left = {m.id for m in await index.query(query, uid="alice", top_k=10)}
    assert left == {"alice-10", "alice-1x", "alice-11", "alice-2"}
    await index.delete([])
    await index.delete(["alice-10", "alice-2"])
    assert {m.id for m in await index.query(query, uid="alice", top_k=10)} == {"alice-1x", "alice-11"}


async def test_upsert_replaces_by_id(index: VectorIndex) -> None:
    e = np.eye(DIM, dtype=np.float32)
    await index.upsert([item("alice", "m1", e[0], created_at=10), item("alice", "m2", e[1], created_at=10)])
    assert (await index.query(e[0], uid="alice", top_k=1))[0].id == "alice-m1"
    await index.upsert(
        [VectorItem(id="alice-m1", values=list(e[2]), uid="alice", memory_id="m1b", created_at=99)]
    )
    got = await index.query(e[2], uid="alice", top_k=5)
    assert [(m.id, m.memory_id) for m in got] == [("alice-m1", "m1b"), ("alice-m2", "m2")]
    assert got[0].score == pytest.approx(1.0)
    assert [m.id for m in await index.query(e[2], uid="alice", top_k=5, start=50)] == ["alice-m1"]
    assert [m.id for m in await index.query(e[2], uid="alice", top_k=5, end=50)] == ["alice-m2"]


async def test_upsert_moves_an_id_between_users(index: VectorIndex) -> None:
    e = np.eye(DIM, dtype=np.float32)
    await index.upsert([item("alice", "m1", e[0])])
    assert len(await index.query(e[0], uid="alice", top_k=5)) == 1
    await index.upsert(
        [VectorItem(id="alice-m1", values=list(e[0]), uid="bob", memory_id="m1", created_at=1)]
    )
    assert await index.query(e[0], uid="alice", top_k=5) == []
    assert [m.id for m in await index.query(e[0], uid="bob", top_k=5)] == ["alice-m1"]


async def test_random_writes_keep_the_index_exact(index: VectorIndex) -> None:
    rng = np.random.default_rng(10)
    model: Model = {}
    query = random_vectors(1, seed=11)[0]
    await index.query(query, uid="alice", top_k=1)  # a warm, empty cache must follow every write
    for step in range(150):
        name = f"m{rng.integers(0, 40)}"
        if rng.random() < 0.3:
            await index.delete([f"alice-{name}"])
            model.pop(f"alice-{name}", None)
        else:
            vec = rng.standard_normal(DIM).astype(np.float32)
            created = int(rng.integers(0, 100))
            await index.upsert([item("alice", name, vec, created_at=created)])
            model[f"alice-{name}"] = ("alice", created, vec)
        if step % 10 == 0:
            assert_matches(
                await index.query(query, uid="alice", top_k=15, start=20, end=80),
                brute_force(model, query, "alice", 15, 20, 80),
            )
    assert_matches(await index.query(query, uid="alice", top_k=100), brute_force(model, query, "alice", 100))


async def test_concurrent_writes_and_queries(index: VectorIndex) -> None:
    vectors = random_vectors(60, seed=12)

    async def query_some() -> None:
        for _ in range(5):
            await index.query(vectors[0], uid="alice", top_k=5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(query_some)
        for i, vec in enumerate(vectors):
            tg.start_soon(index.upsert, [item("alice", f"m{i}", vec)])
    model = {f"alice-m{i}": ("alice", 1_700_000_000, v) for i, v in enumerate(vectors)}
    assert_matches(
        await index.query(vectors[1], uid="alice", top_k=60), brute_force(model, vectors[1], "alice", 60)
    )


async def test_index_survives_close_and_reopen(index: VectorIndex, open_index: Opener) -> None:
    model = await load(index, "alice", random_vectors(30, seed=13))
    query = random_vectors(1, seed=14)[0]
    before = await index.query(query, uid="alice", top_k=10)
    await index.delete(["alice-m0", "alice-m1"])
    for gone in ("alice-m0", "alice-m1"):
        del model[gone]
    await index.close()
    await index.close()  # closing twice is harmless
    reopened = open_index()
    after = await reopened.query(query, uid="alice", top_k=10)
    assert_matches(after, brute_force(model, query, "alice", 10))
    kept = [m.id for m in before if m.id not in ("alice-m0", "alice-m1")]
    assert [m.id for m in after][: len(kept)] == kept


async def test_dimension_mismatch_is_refused(index: VectorIndex) -> None:
    await load(index, "alice", random_vectors(3, seed=15))
    with pytest.raises(ValueError):
        await index.upsert([item("alice", "odd", np.ones(DIM + 1))])
    with pytest.raises(ValueError):
        await index.query(np.ones(DIM - 1, dtype=np.float32), uid="alice", top_k=3)
    assert len(await index.query(np.ones(DIM, dtype=np.float32), uid="alice", top_k=10)) == 3


# NumPy adapter specifics.


async def test_numpy_search_at_10k_vectors_matches_brute_force(tmp_path: Path) -> None:
    # Speed is measured by bench/bench_search.py, not asserted here; this checks the answer.
    index = NumpyVectorIndex(tmp_path / "vectors.db")
    try:
        vectors = random_vectors(10_000, seed=16, dim=384)
        await index.upsert([item("alice", f"m{i}", v, created_at=i) for i, v in enumerate(vectors)])
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for query in random_vectors(5, seed=17, dim=384):
            found = await index.query(query, uid="alice", top_k=10, start=1000, end=9000)
            scores = unit[1000:9001] @ (query / np.linalg.norm(query))
            expected = [f"m{1000 + i}" for i in np.argsort(-scores)[:10]]
            assert [m.memory_id for m in found] == expected
    finally:
        await index.close()


async def test_numpy_refuses_non_finite_values(tmp_path: Path) -> None:
    index = NumpyVectorIndex(tmp_path / "vectors.db")
    try:
        with pytest.raises(ValueError):
            await index.upsert([item("alice", "nan", [float("nan")] * DIM)])
    finally:
        await index.close()

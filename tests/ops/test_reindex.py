"""``omi-backend reindex``: the vector index rebuilt from the memory store, on the production stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.adapters import build_key_value, build_memory_store
from app.config import Settings
from app.core.pipeline import PENDING_INDEX_KEY
from app.core.ports import VectorItem
from app.main import build_services
from tests.ops.helpers import cli, make_memory, production_env, use_env
from tests.production import Production

pytestmark = pytest.mark.anyio


async def seed(production: Production, tmp_path: Path) -> None:
    """alice: 120 kept memories (two pages), one deleted and one discarded (each with a stale
    vector), one queued for re-indexing; bob: two kept memories."""
    settings = production.settings()
    store, kv = build_memory_store(settings), build_key_value(settings)
    services = build_services(production.settings(data_dir=tmp_path / "seed"))
    try:
        for n in range(120):
            await store.put("alice", make_memory(f"a{n:03d}", n))
        await store.put("alice", make_memory("gone", 200, deleted=True))
        await store.put("alice", make_memory("noise", 201, discarded=True))
        await store.put("bob", make_memory("b1", 1))
        await store.put("bob", make_memory("b2", 2))
        stale = [
            VectorItem(id=f"alice-{m}", values=[1.0] * 256, uid="alice", memory_id=m, created_at=0)
            for m in ("gone", "noise")
        ]
        await services.index.upsert(stale)
        await kv.hset(PENDING_INDEX_KEY, "alice:a007", "2026-11-23T09:00:00Z")
    finally:
        await store.close()
        await kv.close()
        await services.close()


async def test_reindex_rebuilds_every_kept_memory_and_drops_stale_vectors(
    production: Production,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(production, tmp_path)
    use_env(monkeypatch, tmp_path, production_env(production, tmp_path / "data"))

    assert await cli("reindex", "--uid", "bob") == 0
    assert set(production.pinecone.stored(production.namespace)) == {
        "alice-gone",
        "alice-noise",
        "bob-b1",
        "bob-b2",
    }

    assert await cli("reindex") == 0
    stored = production.pinecone.stored(production.namespace)
    expected = {f"alice-a{n:03d}" for n in range(120)} | {"bob-b1", "bob-b2"}
    assert set(stored) == expected
    assert stored["bob-b2"]["metadata"] == {"uid": "bob", "memory_id": "b2", "created_at": 1795424520}
    assert all(len(v["values"]) == 256 for v in stored.values())
    err = capsys.readouterr().err
    assert "users [" in err and "2/2" in err  # the progress bar
    assert "reindexed 122 memories of 2 users; removed 2 stale vectors" in err
    kv = build_key_value(production.settings())
    try:
        assert await kv.hgetall(PENDING_INDEX_KEY) == {}
    finally:
        await kv.close()

    upserts = len(production.pinecone.requests_to("/vectors/upsert"))
    assert await cli("reindex") == 0  # again: the same vectors, by id
    assert set(production.pinecone.stored(production.namespace)) == expected
    assert len(production.pinecone.requests_to("/vectors/upsert")) == upserts + 3  # a page at a time


async def test_reindex_names_the_fix_when_the_index_holds_another_dimension(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    production: Production,
) -> None:
    data = tmp_path / "data"
    use_env(monkeypatch, tmp_path, {"OMI_DATA_DIR": str(data)})
    store = build_memory_store(Settings(data_dir=data))
    try:
        await store.put("alice", make_memory("m1"))
    finally:
        await store.close()
    assert await cli("reindex") == 0  # MiniLM: 384 dimensions
    use_env(
        monkeypatch,
        tmp_path,
        {"OMI_DATA_DIR": str(data)}
        | {k: v for k, v in production.env().items() if "OPENAI" in k or k == "OMI_EMBEDDER"},
    )
    assert await cli("reindex") == 1  # the fake OpenAI: 256
    err = capsys.readouterr().err
    assert "delete" in err and "vectors.db" in err and "run reindex again" in err
    (data / "vectors.db").unlink()
    assert await cli("reindex") == 0

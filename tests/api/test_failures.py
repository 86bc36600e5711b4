"""Failure behaviour: a vendor that stays down is a 503; a failed index write is repaired later."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.errors import BackendUnavailable
from app.core.models import Memory
from app.core.ports import MemoryQuery, VectorItem
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import create_app
from tests.api.conftest import embedded_services

pytestmark = pytest.mark.anyio

MEMORY = {
    "started_at": "2026-11-23T09:00:00Z",
    "finished_at": "2026-11-23T09:01:00Z",
    "transcript_segments": [{"text": "Remind me to renew the car insurance before the end of the month."}],
}


class DownStore:
    """A MemoryStore whose writes fail the way an adapter reports a vendor outage."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def put(self, uid: str, memory: Memory) -> None:
        raise BackendUnavailable("firestore", "deadline exceeded after 3 attempts")


class FlakyIndex:
    """A VectorIndex whose upserts fail while ``down`` is set."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = True

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def upsert(self, items: Sequence[VectorItem]) -> None:
        if self.down:
            raise BackendUnavailable("pinecone", "503 from the index")
        await self.inner.upsert(items)  # type: ignore[attr-defined]


async def test_a_store_outage_is_a_503_with_a_json_body(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    base = embedded_services(tmp_path, embedder)
    services = Services(
        store=DownStore(base.store),  # type: ignore[arg-type]
        index=base.index,
        blobs=base.blobs,
        kv=base.kv,
        embedder=base.embedder,
        llm=base.llm,
        stt=base.stt,
    )
    async with AsyncTestClient(app=create_app(Settings(data_dir=tmp_path), services=services)) as client:
        headers = {"Authorization": f"Bearer {await TokenService(services.kv).create('alice')}"}
        response = await client.post("/v1/memories", json=MEMORY, headers=headers)
        assert response.status_code == 503
        assert "firestore" in response.json()["detail"]
        assert response.headers["retry-after"] == "5"
        assert await base.store.list("alice", MemoryQuery()) == []


@pytest.mark.parametrize("uid", ["alice", "org:alice"])  # a uid may hold ":" (tokens.valid_uid)
async def test_a_failed_index_write_keeps_the_memory_and_is_repaired_on_the_next_start(
    tmp_path: Path, embedder: MiniLMEmbedder, uid: str
) -> None:
    settings = Settings(data_dir=tmp_path)
    base = embedded_services(tmp_path, embedder)
    flaky = FlakyIndex(base.index)
    services = Services(
        store=base.store,
        index=flaky,
        blobs=base.blobs,
        kv=base.kv,
        embedder=embedder,
        llm=base.llm,  # type: ignore[arg-type]
        stt=base.stt,
    )
    search = {"query": "car insurance renewal"}
    async with AsyncTestClient(app=create_app(settings, services=services)) as client:
        headers = {"Authorization": f"Bearer {await TokenService(services.kv).create(uid)}"}
        created = await client.post("/v1/memories", json=MEMORY, headers=headers)
        assert created.status_code == 200
        memory_id = created.json()["memory"]["id"]
        assert (await client.get(f"/v1/memories/{memory_id}", headers=headers)).status_code == 200
        assert (await client.post("/v1/memories/search", json=search, headers=headers)).json() == []
        assert await services.kv.hgetall("vectors:pending") != {}

    again = embedded_services(tmp_path, embedder)
    async with AsyncTestClient(app=create_app(settings, services=again)) as client:
        found = (await client.post("/v1/memories/search", json=search, headers=headers)).json()
        assert [m["id"] for m in found] == [memory_id]
        assert await again.kv.hgetall("vectors:pending") == {}

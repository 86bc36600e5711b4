"""Vendor outages on the production adapters, end to end through the real SDKs and the stand-ins.

A vendor that times out or answers 5xx is tried again with backoff (the requests the fakes
recorded show each try) and then the request gets a 503 with a JSON body, soon: never a hang,
never a half-written memory. A vector upsert that fails leaves the memory stored and queued in
``vectors:pending``; the next start of the server indexes it once Pinecone is back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.core.pipeline import PENDING_INDEX_KEY
from app.core.ports import MemoryQuery
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import create_app
from tests.api.conftest import WHISPER
from tests.backends.emulators import free_port
from tests.inloop import in_loop_client
from tests.production import Production, production_services

pytestmark = pytest.mark.anyio

MEMORY = {
    "started_at": "2026-11-23T09:00:00Z",
    "finished_at": "2026-11-23T09:01:00Z",
    "transcript_segments": [{"text": "Remind me to renew the car insurance before the end of the month."}],
}
SEARCH = {"query": "car insurance renewal"}
TRIES = 3  # backend_retries=2 in the production settings: the first try and two more


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Services, dict[str, str]]]:
    services = production_services(settings, WHISPER)
    async with in_loop_client(create_app(settings, services=services)) as client:
        headers = {"Authorization": f"Bearer {await TokenService(services.kv).create('alice')}"}
        yield client, services, headers


def assert_503(response: httpx.Response, backend: str) -> None:
    assert response.status_code == 503, response.text
    body: dict[str, Any] = response.json()
    assert body == {"status_code": 503, "detail": f"{backend} is unavailable, try again later"}
    assert response.headers["retry-after"] == "5"


@pytest.fixture
def settings(production: Production, tmp_path: Path) -> Settings:
    return production.settings(Settings(data_dir=tmp_path / "data"))


@pytest.fixture
def production_settings_fast(production: Production, tmp_path: Path) -> Settings:
    return production.settings(Settings(data_dir=tmp_path / "data"), backend_timeout=1.0, backend_retries=1)


async def test_openai_failing_persistently_is_a_503_and_stores_nothing(
    production: Production, settings: Settings
) -> None:
    async with running(settings) as (client, services, headers):
        production.openai.reset()
        production.openai.fail_next(TRIES, status=500)
        began = time.monotonic()
        response = await client.post("/v1/memories", json=MEMORY, headers=headers)
        assert time.monotonic() - began < 15
        assert_503(response, "openai")
        assert len(production.openai.requests_to("/v1/chat/completions")) == TRIES
        assert await services.store.list("alice", MemoryQuery()) == []
        assert production.pinecone.stored(production.namespace) == {}
        # The next request, with OpenAI back, works.
        assert (await client.post("/v1/memories", json=MEMORY, headers=headers)).status_code == 200


async def test_an_openai_that_stalls_is_a_503_within_the_timeouts(
    production: Production, production_settings_fast: Settings
) -> None:
    async with running(production_settings_fast) as (client, services, headers):
        production.openai.stall_next(2, seconds=30)
        began = time.monotonic()
        response = await client.post("/v1/memories", json=MEMORY, headers=headers)
        took = time.monotonic() - began
        assert_503(response, "openai")
        assert took < 2 * 1.0 + 5, took  # two tries of 1 s and the SDK's backoff, not 30 s
        assert await services.store.list("alice", MemoryQuery()) == []


async def test_pinecone_failing_on_search_is_a_503(production: Production, settings: Settings) -> None:
    async with running(settings) as (client, _, headers):
        assert (await client.post("/v1/memories", json=MEMORY, headers=headers)).status_code == 200
        production.pinecone.reset()
        production.pinecone.fail_next(TRIES, status=503)
        began = time.monotonic()
        response = await client.post("/v1/memories/search", json=SEARCH, headers=headers)
        assert time.monotonic() - began < 15
        assert_503(response, "pinecone")
        assert len(production.pinecone.requests_to("/query")) == TRIES


async def test_firestore_down_is_a_503_and_indexes_nothing(
    production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = production.settings(Settings(data_dir=tmp_path / "data"), backend_timeout=2.0)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens
    async with running(settings) as (client, _, headers):
        began = time.monotonic()
        response = await client.post("/v1/memories", json=MEMORY, headers=headers)
        assert time.monotonic() - began < settings.backend_timeout + 10
        assert_503(response, "firestore")
        assert_503(await client.get("/v1/memories", headers=headers), "firestore")
        assert production.pinecone.stored(production.namespace) == {}


async def test_a_failed_upsert_is_queued_and_indexed_on_the_next_start(
    production: Production, settings: Settings
) -> None:
    async with running(settings) as (client, services, headers):
        production.pinecone.fail_next(TRIES, status=500)
        created = await client.post("/v1/memories", json=MEMORY, headers=headers)
        assert created.status_code == 200, created.text  # the memory is kept
        memory_id = created.json()["memory"]["id"]
        assert len(production.pinecone.requests_to("/vectors/upsert")) == TRIES
        assert (await client.get(f"/v1/memories/{memory_id}", headers=headers)).status_code == 200
        assert list(await services.kv.hgetall(PENDING_INDEX_KEY)) == [f"alice:{memory_id}"]
        assert (await client.post("/v1/memories/search", json=SEARCH, headers=headers)).json() == []

    # Pinecone is back; any replica's next start repairs the index.
    async with running(settings) as (client, services, headers):
        assert await services.kv.hgetall(PENDING_INDEX_KEY) == {}
        assert list(production.pinecone.stored(production.namespace)) == [f"alice-{memory_id}"]
        found = (await client.post("/v1/memories/search", json=SEARCH, headers=headers)).json()
        assert [m["id"] for m in found] == [memory_id]

"""Authentication on every route (contract section 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.tokens import TokenService
from app.main import create_app
from tests.api.conftest import Api, embedded_services

pytestmark = pytest.mark.anyio

SEGMENT = {"text": "I need to call the bank tomorrow about the mortgage."}
MEMORY = {
    "started_at": "2026-11-23T09:00:00Z",
    "finished_at": "2026-11-23T09:01:00Z",
    "transcript_segments": [SEGMENT],
}


async def test_every_api_route_refuses_a_missing_or_bad_credential(api: Api) -> None:
    app = api.client.app
    routes = [
        (method, route.path)
        for route in app.routes
        if route.path.startswith(("/v1", "/v2", "/v3"))
        for method in getattr(route, "methods", ())
        if method not in ("HEAD", "OPTIONS")
    ]
    assert len(routes) >= 10
    for header in (None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer omi_nope", "x" * 10_000):
        headers = {} if header is None else {"Authorization": header}
        for method, path in routes:
            url = re.sub(r"\{[^}]+\}", "some-id", path)
            response = await api.client.request(method, url, headers=headers, json=MEMORY)
            assert response.status_code == 401, (method, url, header, response.text)
            assert response.json()["detail"]
    assert (await api.client.get("/health")).status_code == 200


async def test_tokens_work_with_and_without_bearer_and_stop_working_when_revoked(api: Api) -> None:
    tokens = TokenService(api.services.kv)
    token = await tokens.create("carol")
    for header in (f"Bearer {token}", f"bearer {token}", token):
        response = await api.client.get("/v1/memories", headers={"Authorization": header})
        assert response.status_code == 200, header
    assert await tokens.count("carol") == 1
    assert await tokens.revoke("carol", token) == 1
    response = await api.client.get("/v1/memories", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_admin_key_impersonates_a_user(api: Api) -> None:
    created = await api.client.post("/v1/memories", json=MEMORY, headers=api.alice)
    memory_id = created.json()["memory"]["id"]
    for header in ("test-admin-key-alice", "Bearer test-admin-key-alice"):
        response = await api.client.get(f"/v1/memories/{memory_id}", headers={"Authorization": header})
        assert response.status_code == 200, header
    for header in (
        "test-admin-key-",
        "test-admin-key",
        "test-admin-keY-alice",
        "Bearer test-admin-key-bad uid",
    ):
        response = await api.client.get("/v1/memories", headers={"Authorization": header})
        assert response.status_code == 401, header


async def test_without_admin_key_impersonation_is_refused_not_a_crash(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path)
    services = embedded_services(tmp_path, embedder)
    async with AsyncTestClient(app=create_app(settings, services=services)) as client:
        for header in ("alice", "Nonealice", "Bearer alice"):
            response = await client.get("/v1/memories", headers={"Authorization": header})
            assert response.status_code == 401
            assert response.json()["detail"]


async def test_a_uid_parameter_that_disagrees_with_the_token_is_403(api: Api) -> None:
    assert (await api.client.get("/v1/memories?uid=alice", headers=api.alice)).status_code == 200
    response = await api.client.get("/v1/memories?uid=bob", headers=api.alice)
    assert response.status_code == 403
    assert response.json()["detail"]


async def test_messages_store_the_question_and_answer_from_memories(api: Api) -> None:
    await api.client.post("/v1/memories", json=MEMORY, headers=api.alice)
    reply = await api.client.post(
        "/v1/messages", json={"text": "what about my home loan?"}, headers=api.alice
    )
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["sender"] == "ai" and len(answer["memories_id"]) == 1
    assert set(answer) == {
        "id", "text", "created_at", "sender", "plugin_id", "from_external_integration", "type", "memories_id",
    }  # fmt: skip
    listed = (await api.client.get("/v1/messages", headers=api.alice)).json()
    assert [m["sender"] for m in listed] == ["ai", "human"]
    assert (await api.client.get("/v1/messages", headers=api.bob)).json() == []
    bad = await api.client.post("/v1/messages", json={"text": ""}, headers=api.alice)
    assert bad.status_code == 400

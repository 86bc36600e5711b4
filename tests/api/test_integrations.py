"""The workflow and screenpipe integrations: per-user keys, the global key, bodies, idempotency.

Each test runs on the embedded adapters and on the production ones (the ``backends`` fixture
of ``tests/api/conftest.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.core.ports import MemoryQuery
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import create_app
from integrations.common import integration_keys, text_segments
from tests.api.conftest import Backends
from tests.inloop import in_loop_client

pytestmark = pytest.mark.anyio

WORKFLOW = "/v1/integrations/workflow/memories"
SCREENPIPE = "/v1/integrations/screenpipe"
GLOBAL_KEY = "global-integrations-key-0123456789"

SPOKEN = (
    "We agreed to move the product launch to the second week of July. "
    "Maya will send the pricing page to Tom for review on Friday. "
    "The design review is next Tuesday at three in the afternoon."
)
WRITTEN = (
    "Quarterly budget notes: marketing spend grows by ten percent, hiring freeze for support until March."
)


@dataclass
class Integrations:
    client: httpx.AsyncClient
    services: Services
    alice_key: str
    bob_key: str
    alice_token: str

    def workflow(self, key: str | None = None) -> dict[str, str]:
        return {"api-key": key if key is not None else self.alice_key}

    def screenpipe(self, key: str | None = None) -> dict[str, str]:
        return {"api_key": key if key is not None else self.alice_key}


@pytest.fixture
def global_key() -> str | None:
    return None


@pytest.fixture
async def api(tmp_path: Path, backends: Backends, global_key: str | None) -> AsyncIterator[Integrations]:
    settings, services = backends(Settings(data_dir=tmp_path / "data", integrations_api_key=global_key))
    async with in_loop_client(create_app(settings, services=services)) as client:
        keys = integration_keys(services.kv)
        yield Integrations(
            client=client,
            services=services,
            alice_key=await keys.create("alice"),
            bob_key=await keys.create("bob"),
            alice_token=await TokenService(services.kv).create("alice"),
        )


async def workflow_memories(api: Integrations, limit: int = 12, uid: str = "alice") -> list[dict[str, Any]]:
    response = await api.client.get(f"{WORKFLOW}?uid={uid}&limit={limit}", headers=api.workflow())
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


# --- workflow --------------------------------------------------------------------------------


async def test_workflow_creates_a_memory_from_spoken_text(api: Integrations) -> None:
    request = {"text": SPOKEN, "text_source": "audio_transcript", "started_at": "2026-05-04T09:00:00Z"}
    response = await api.client.post(f"{WORKFLOW}?uid=alice", json=request, headers=api.workflow())
    assert response.status_code == 200, response.text
    assert response.json() == {}
    [memory] = await workflow_memories(api, limit=1)
    assert memory["source"] == "workflow"
    assert memory["external_data"]["text"] == SPOKEN
    assert memory["external_data"]["text_source"] == "audio_transcript"
    started = datetime.fromisoformat(memory["started_at"])
    finished = datetime.fromisoformat(memory["finished_at"])
    assert (finished - started).total_seconds() == 300  # finished_at defaults to start + 300 s
    segments = memory["transcript_segments"]
    assert len(segments) == 3 and {s["speaker"] for s in segments} == {"SPEAKER_0"}
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(300)
    assert all(a["end"] <= b["start"] + 1e-9 for a, b in itertools.pairwise(segments))
    assert memory["structured"]["title"]


async def test_workflow_other_text_is_one_segment_and_the_request_is_kept(api: Integrations) -> None:
    request: dict[str, Any] = {
        "text": WRITTEN,
        "text_source": "other_text",
        "started_at": "2026-05-04T09:00:00+02:00",
        "finished_at": "2026-05-04T09:10:00+02:00",
        "language": "en",
        "geolocation": {"latitude": 52.37, "longitude": 4.89, "address": "Amsterdam"},
    }
    response = await api.client.post(WORKFLOW, json=request, headers=api.workflow())  # uid optional
    assert response.status_code == 200, response.text
    [memory] = await workflow_memories(api, limit=1)
    [segment] = memory["transcript_segments"]
    assert segment["text"] == WRITTEN and (segment["start"], segment["end"]) == (0, 600)
    assert memory["language"] == "en" and memory["geolocation"]["address"] == "Amsterdam"
    external = memory["external_data"]
    assert external["text"] == WRITTEN and external["geolocation"]["latitude"] == 52.37
    assert datetime.fromisoformat(external["started_at"]) == datetime.fromisoformat(request["started_at"])


async def test_workflow_list_is_newest_kept_first_with_limit_1_to_12(api: Integrations) -> None:
    for day in (1, 2, 3):
        request = {"text": f"{WRITTEN} Entry {day}.", "text_source": "other_text"}
        assert (await api.client.post(WORKFLOW, json=request, headers=api.workflow())).status_code == 200
    discard = {"text": "Okay.", "text_source": "other_text"}
    assert (await api.client.post(WORKFLOW, json=discard, headers=api.workflow())).status_code == 200
    listed = await workflow_memories(api)
    assert [m["external_data"]["text"][-8:] for m in listed] == ["Entry 3.", "Entry 2.", "Entry 1."]
    assert len(await workflow_memories(api, limit=1)) == 1
    default = await api.client.get(WORKFLOW, headers=api.workflow())
    assert len(default.json()) == 1  # limit defaults to 1
    for bad in (0, 13, -1):
        response = await api.client.get(f"{WORKFLOW}?limit={bad}", headers=api.workflow())
        assert response.status_code == 400, bad
    assert await workflow_memories(api, uid="alice") != []
    bob = await api.client.get(WORKFLOW, headers=api.workflow(api.bob_key))
    assert bob.json() == []


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"text": ""},
        {"text": 42},
        {"text": WRITTEN, "text_source": "email"},
        {"text": WRITTEN, "started_at": "yesterday"},
        {"text": WRITTEN, "started_at": "2026-05-04T10:00:00Z", "finished_at": "2026-05-04T09:00:00Z"},
        {"text": WRITTEN, "geolocation": {"address": "nowhere"}},
        [WRITTEN],
    ],
)
async def test_workflow_bad_bodies_are_400(api: Integrations, request_body: Any) -> None:
    response = await api.client.post(WORKFLOW, json=request_body, headers=api.workflow())
    assert response.status_code == 400, response.text
    assert await workflow_memories(api) == []


async def test_workflow_not_json_is_400(api: Integrations) -> None:
    response = await api.client.post(WORKFLOW, content=b"{not json", headers=api.workflow())
    assert response.status_code == 400


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [WORKFLOW, SCREENPIPE])
async def test_keys_decide_the_uid(api: Integrations, path: str) -> None:
    body: dict[str, Any] = (
        {"text": WRITTEN, "text_source": "other_text"}
        if path == WORKFLOW
        else {
            "request_id": "r1",
            "source": "screen",
            "text": WRITTEN,
            "timestamp_range": {"start": 1, "end": 2},
        }
    )
    missing = await api.client.post(f"{path}?uid=alice", json=body)
    assert missing.status_code == 401 and "detail" in missing.json()
    for header in ("api-key", "api_key"):
        bad = await api.client.post(f"{path}?uid=alice", json=body, headers={header: "omi_ik_wrong"})
        assert bad.status_code == 401
    empty = await api.client.post(path, json=body, headers={"api-key": ""})
    assert empty.status_code == 401
    token = await api.client.post(path, json=body, headers={"api-key": api.alice_token})
    assert token.status_code == 401  # a bearer token is not an integration key
    other = await api.client.post(f"{path}?uid=bob", json=body, headers=api.workflow())
    assert other.status_code == 403
    unauthenticated_bad_body = await api.client.post(path, json={"nonsense": True})
    assert unauthenticated_bad_body.status_code == 401  # the key is checked before the body
    assert await api.services.store.list("bob", _all()) == []
    assert await api.services.store.list("alice", _all()) == []


async def test_an_integration_key_is_not_a_bearer_token(api: Integrations) -> None:
    response = await api.client.get("/v1/memories", headers={"Authorization": f"Bearer {api.alice_key}"})
    assert response.status_code == 401


async def test_a_revoked_key_is_refused(api: Integrations) -> None:
    assert await integration_keys(api.services.kv).revoke("alice", api.alice_key) == 1
    response = await api.client.get(WORKFLOW, headers=api.workflow())
    assert response.status_code == 401
    assert (await api.client.get(WORKFLOW, headers=api.workflow(api.bob_key))).status_code == 200


async def test_without_a_global_key_no_other_key_gets_through(api: Integrations) -> None:
    for key in (GLOBAL_KEY, "None", "null", " "):
        response = await api.client.get(f"{WORKFLOW}?uid=alice", headers=api.workflow(key))
        assert response.status_code == 401, key


@pytest.mark.parametrize("global_key", [GLOBAL_KEY])
async def test_a_global_key_takes_the_uid_from_the_query(api: Integrations) -> None:
    request = {"text": WRITTEN, "text_source": "other_text"}
    response = await api.client.post(f"{WORKFLOW}?uid=carol", json=request, headers=api.workflow(GLOBAL_KEY))
    assert response.status_code == 200, response.text
    assert len(await api.services.store.list("carol", _all())) == 1
    no_uid = await api.client.post(WORKFLOW, json=request, headers=api.workflow(GLOBAL_KEY))
    assert no_uid.status_code == 400
    bad_uid = await api.client.post(f"{WORKFLOW}?uid=a%20b", json=request, headers=api.workflow(GLOBAL_KEY))
    assert bad_uid.status_code == 400
    near = await api.client.post(
        f"{WORKFLOW}?uid=carol", json=request, headers=api.workflow(GLOBAL_KEY + "x")
    )
    assert near.status_code == 401
    # per-user keys still decide their own uid
    mine = await api.client.post(f"{WORKFLOW}?uid=carol", json=request, headers=api.workflow())
    assert mine.status_code == 403


# --- screenpipe ------------------------------------------------------------------------------


def screenpipe_body(request_id: str = "req-1", source: str = "screen", text: str = WRITTEN) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "source": source,
        "text": text,
        "timestamp_range": {"start": 1_780_000_000, "end": 1_780_000_600},
    }


async def test_screenpipe_creates_a_memory_once_per_request_id(api: Integrations) -> None:
    first = await api.client.post(f"{SCREENPIPE}?uid=alice", json=screenpipe_body(), headers=api.screenpipe())
    assert first.status_code == 200, first.text
    memory = first.json()
    assert memory["source"] == "screenpipe"
    assert datetime.fromisoformat(memory["started_at"]).timestamp() == 1_780_000_000
    assert datetime.fromisoformat(memory["finished_at"]).timestamp() == 1_780_000_600
    assert len(memory["transcript_segments"]) == 1
    assert memory["external_data"]["request_id"] == "req-1"
    again = await api.client.post(SCREENPIPE, json=screenpipe_body(), headers=api.screenpipe())
    assert again.status_code == 200 and again.json()["id"] == memory["id"]
    assert len(await api.services.store.list("alice", _all())) == 1
    other = await api.client.post(SCREENPIPE, json=screenpipe_body("req-2"), headers=api.screenpipe())
    assert other.json()["id"] != memory["id"]
    bobs = await api.client.post(SCREENPIPE, json=screenpipe_body(), headers=api.screenpipe(api.bob_key))
    assert bobs.json()["id"] != memory["id"]  # request ids are per user
    assert len(await api.services.store.list("alice", _all())) == 2


async def test_screenpipe_audio_is_split_into_sentences(api: Integrations) -> None:
    response = await api.client.post(
        SCREENPIPE, json=screenpipe_body(source="audio", text=SPOKEN), headers=api.screenpipe()
    )
    assert response.status_code == 200, response.text
    segments = response.json()["transcript_segments"]
    assert len(segments) == 3 and segments[-1]["end"] == pytest.approx(600)


@pytest.mark.parametrize(
    "change",
    [
        {"source": "video"},
        {"request_id": ""},
        {"text": ""},
        {"timestamp_range": {"start": 10, "end": 5}},
        {"timestamp_range": {"start": -1, "end": 5}},
        {"timestamp_range": {"start": "now", "end": 5}},
        {"timestamp_range": None},
    ],
)
async def test_screenpipe_bad_bodies_are_400(api: Integrations, change: dict[str, Any]) -> None:
    response = await api.client.post(SCREENPIPE, json=screenpipe_body() | change, headers=api.screenpipe())
    assert response.status_code == 400, response.text
    assert await api.services.store.list("alice", _all()) == []


# --- text to segments ------------------------------------------------------------------------


def test_text_segments_cover_the_duration_in_order() -> None:
    segments = text_segments("One. Two two two. Three!", "audio_transcript", 60)
    assert [s.text for s in segments] == ["One.", "Two two two.", "Three!"]
    assert segments[0].start == 0 and segments[-1].end == pytest.approx(60)
    assert all(s.speaker == "SPEAKER_0" and s.start <= s.end for s in segments)
    [single] = text_segments("One. Two.", "other_text", 0)
    assert (single.text, single.start, single.end) == ("One. Two.", 0, 0)


def _all() -> MemoryQuery:
    return MemoryQuery(limit=100)

"""The memory routes of the contract, end to end on the embedded adapters and on the production ones.

Every test runs on both (the ``backends`` param of ``api``) except those that check what the
embedded structurer and embedder make of a conversation (an event's date, a paraphrase): the
fake OpenAI structures by rote and embeds bags of words, so those select "embedded" alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Api

pytestmark = pytest.mark.anyio
EMBEDDED_ONLY = pytest.mark.parametrize("backends", ["embedded"], indirect=True)

CORPUS = json.loads(
    (Path(__file__).resolve().parents[2].parent / "shared" / "audio" / "corpus.json").read_text()
)


def body(name: str, started_at: str = "2026-11-23T09:00:00+00:00", **extra: Any) -> dict[str, Any]:
    """A CreateMemory body from a corpus conversation, one segment per utterance."""
    clip = CORPUS[name]
    voices: dict[str, int] = {}
    segments = [
        {
            "text": u["text"],
            "speaker": f"SPEAKER_{voices.setdefault(u['speaker'], len(voices))}",
            "speaker_id": voices[u["speaker"]],
            "is_user": False,
            "person_id": None,
            "start": u["start"],
            "end": u["end"],
        }
        for u in clip["utterances"]
    ]
    return {
        "started_at": started_at,
        "finished_at": "2026-11-23T09:05:00+00:00",
        "transcript_segments": segments,
        **extra,
    }


async def create(api: Api, name: str, headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/memories", json=body(name, **extra), headers=headers or api.alice)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


MEMORY_FIELDS = {
    "id", "created_at", "started_at", "finished_at", "source", "language", "structured",
    "transcript_segments", "geolocation", "photos", "plugins_results", "external_data",
    "postprocessing", "discarded", "deleted", "visibility",
}  # fmt: skip


def assert_iso_with_timezone(value: str) -> None:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value


async def test_create_returns_a_structured_memory_in_the_contract_shape(api: Api) -> None:
    request = body("grocery")
    request["transcript_segments"][1] |= {"speaker": "SPEAKER_1", "speaker_id": 1}  # a second voice
    response = await api.client.post("/v1/memories", json=request, headers=api.alice)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) == {"memory", "messages"}
    memory = result["memory"]
    assert set(memory) == MEMORY_FIELDS
    for field in ("created_at", "started_at", "finished_at"):
        assert_iso_with_timezone(memory[field])
    structured = memory["structured"]
    assert set(structured) == {"title", "overview", "emoji", "category", "action_items", "events"}
    assert structured["title"] and structured["overview"]
    assert any("buy milk" in a["description"].lower() for a in structured["action_items"])
    assert all(set(a) == {"description", "completed"} for a in structured["action_items"])
    (event,) = [e for e in structured["events"] if "plumber" in (e["title"] + e["description"]).lower()]
    assert set(event) == {"title", "description", "start", "duration", "created"}
    assert_iso_with_timezone(event["start"])
    assert event["start"].startswith("2026-11-24")  # "tomorrow" of a conversation on the 23rd
    segment = memory["transcript_segments"][1]
    assert set(segment) == {"text", "speaker", "speaker_id", "is_user", "person_id", "start", "end"}
    assert segment["speaker"] == "SPEAKER_1" and segment["speaker_id"] == 1
    assert memory["discarded"] is False and memory["deleted"] is False
    assert memory["visibility"] == "private" and memory["source"] == "friend"


@EMBEDDED_ONLY
async def test_the_standup_gets_its_category_action_item_and_dated_event(api: Api) -> None:
    structured = (await create(api, "standup"))["memory"]["structured"]
    assert structured["category"] in {"work", "business"}
    assert any("send the slides to the team" in a["description"].lower() for a in structured["action_items"])
    (event,) = [e for e in structured["events"] if "design review" in (e["title"] + e["description"]).lower()]
    assert datetime.fromisoformat(event["start"].replace("Z", "+00:00")) == datetime.fromisoformat(
        "2026-12-01T15:00:00+00:00"
    )


async def test_short_filler_is_stored_as_discarded(api: Api) -> None:
    memory = (await create(api, "short"))["memory"]
    assert memory["discarded"] is True
    listed = (await api.client.get("/v1/memories", headers=api.alice)).json()
    assert [m["id"] for m in listed] == [memory["id"]]
    kept = (await api.client.get("/v1/memories?include_discarded=false", headers=api.alice)).json()
    assert kept == []


async def test_create_refuses_an_empty_memory_and_bad_bodies(api: Api) -> None:
    empty = {"started_at": "2026-11-23T09:00:00Z", "finished_at": "2026-11-23T09:01:00Z"}
    for payload in (
        empty,
        {**empty, "transcript_segments": []},
        {"finished_at": "2026-11-23T09:01:00Z", "transcript_segments": [{"text": "hi"}]},
        {**empty, "transcript_segments": [{"text": "hi", "start": 5, "end": 1}]},
        {**empty, "transcript_segments": [{"text": "hi", "speaker": "BOB"}]},
        {**empty, "finished_at": "2026-11-22T09:00:00Z", "transcript_segments": [{"text": "hi"}]},
        {**empty, "source": "telepathy", "transcript_segments": [{"text": "hi"}]},
    ):
        response = await api.client.post("/v1/memories", json=payload, headers=api.alice)
        assert response.status_code == 400, payload
        assert "detail" in response.json()
    response = await api.client.post(
        "/v1/memories", content=b"{not json", headers={**api.alice, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert (await api.client.get("/v1/memories", headers=api.alice)).json() == []


async def test_oversized_body_is_413(api: Api) -> None:
    huge = body("standup")
    huge["transcript_segments"] = huge["transcript_segments"] * 3000
    response = await api.client.post("/v1/memories", json=huge, headers=api.alice)
    assert response.status_code == 413
    assert (await api.client.get("/v1/memories", headers=api.alice)).json() == []


async def test_list_is_newest_first_with_paging_and_filters(api: Api) -> None:
    ids = [(await create(api, name))["memory"]["id"] for name in ("standup", "doctor", "travel", "lecture")]
    listed = (await api.client.get("/v1/memories", headers=api.alice)).json()
    assert [m["id"] for m in listed] == ids[::-1]
    page = (await api.client.get("/v1/memories?limit=2&offset=1", headers=api.alice)).json()
    assert [m["id"] for m in page] == ids[::-1][1:3]
    category = listed[-2]["structured"]["category"]  # the doctor's visit: health, if structured so
    same = (await api.client.get(f"/v1/memories?category={category}", headers=api.alice)).json()
    assert [m["id"] for m in same] == [m["id"] for m in listed if m["structured"]["category"] == category]
    future = (await api.client.get("/v1/memories?start_date=2100-01-01T00:00:00Z", headers=api.alice)).json()
    assert future == []
    for bad in ("limit=0", "limit=abc", "offset=-1", "start_date=yesterday", "include_discarded=maybe"):
        response = await api.client.get(f"/v1/memories?{bad}", headers=api.alice)
        assert response.status_code == 400, bad


async def test_get_delete_and_deleted_memory_is_gone_from_list_and_search(api: Api) -> None:
    memory = (await create(api, "doctor"))["memory"]
    url = f"/v1/memories/{memory['id']}"
    assert (await api.client.get(url, headers=api.alice)).json()["id"] == memory["id"]
    query = {"query": "what did the physician say about my sore leg", "limit": 5}
    found = (await api.client.post("/v1/memories/search", json=query, headers=api.alice)).json()
    assert [m["id"] for m in found][:1] == [memory["id"]]
    assert (await api.client.delete(url, headers=api.alice)).status_code == 204
    assert (await api.client.get(url, headers=api.alice)).status_code == 404
    assert (await api.client.delete(url, headers=api.alice)).status_code == 404
    assert (await api.client.get("/v1/memories", headers=api.alice)).json() == []
    assert (await api.client.post("/v1/memories/search", json=query, headers=api.alice)).json() == []
    stored = await api.services.index.query(
        (await api.services.embedder.embed(["knee"]))[0], uid="alice", top_k=10
    )
    assert stored == []


@EMBEDDED_ONLY
async def test_search_finds_a_paraphrase_sharing_no_keyword(api: Api) -> None:
    ids = {
        name: (await create(api, name))["memory"]["id"] for name in ("standup", "doctor", "travel", "lecture")
    }
    for query, expected in (
        ("how plants make food from light", "lecture"),
        ("holiday trip by plane", "travel"),
        ("my appointment with the physician", "doctor"),
    ):
        found = (
            await api.client.post("/v1/memories/search", json={"query": query, "limit": 4}, headers=api.alice)
        ).json()
        assert found[0]["id"] == ids[expected], (query, [m["structured"]["title"] for m in found])
    bad = await api.client.post("/v1/memories/search", json={"query": "", "limit": 4}, headers=api.alice)
    assert bad.status_code == 400
    window = {"query": "plants", "limit": 4, "end_date": "2000-01-01T00:00:00Z"}
    assert (await api.client.post("/v1/memories/search", json=window, headers=api.alice)).json() == []


async def test_reprocess_edit_events_visibility_restore(api: Api) -> None:
    memory = (await create(api, "grocery"))["memory"]
    url = f"/v1/memories/{memory['id']}"
    again = await api.client.post(f"{url}/reprocess", headers=api.alice)
    assert again.status_code == 200
    assert again.json()["structured"]["title"] == memory["structured"]["title"]

    edited = await api.client.patch(url, json={"title": "Weekly standup"}, headers=api.alice)
    assert edited.status_code == 200 and edited.json()["structured"]["title"] == "Weekly standup"
    assert edited.json()["structured"]["overview"] == memory["structured"]["overview"]

    events = await api.client.patch(
        f"{url}/events", json={"events_idx": [0], "values": [True]}, headers=api.alice
    )
    assert events.json() == {"status": "Ok"}
    stored = (await api.client.get(url, headers=api.alice)).json()
    assert stored["structured"]["events"][0]["created"] is True
    for bad in ({"events_idx": [99], "values": [True]}, {"events_idx": [0, 0], "values": [True]}):
        assert (await api.client.patch(f"{url}/events", json=bad, headers=api.alice)).status_code == 400

    visibility = await api.client.patch(f"{url}/visibility?value=public", headers=api.alice)
    assert visibility.json() == {"status": "Ok"}
    assert (await api.client.get(url, headers=api.alice)).json()["visibility"] == "public"
    assert (await api.client.patch(f"{url}/visibility?value=everyone", headers=api.alice)).status_code == 400

    await api.client.delete(url, headers=api.alice)
    restored = await api.client.post(f"{url}/restore", headers=api.alice)
    assert restored.status_code == 200 and restored.json()["deleted"] is False
    assert (await api.client.get(url, headers=api.alice)).status_code == 200
    found = await api.client.post("/v1/memories/search", json={"query": "Weekly standup"}, headers=api.alice)
    assert [m["id"] for m in found.json()] == [memory["id"]]


async def test_processing_memory_id_makes_creation_idempotent(api: Api) -> None:
    first = await create(api, "grocery", processing_memory_id="pm-1")
    second = await create(api, "grocery", processing_memory_id="pm-1")
    assert first["memory"]["id"] == second["memory"]["id"]
    assert len((await api.client.get("/v1/memories", headers=api.alice)).json()) == 1


async def test_query_parameters_language_and_source(api: Api) -> None:
    response = await api.client.post(
        "/v1/memories?language_code=de&source=openglass&trigger_integrations=false",
        json=body("grocery"),
        headers=api.alice,
    )
    memory = response.json()["memory"]
    assert memory["language"] == "de" and memory["source"] == "openglass"
    bad = await api.client.post("/v1/memories?source=radio", json=body("grocery"), headers=api.alice)
    assert bad.status_code == 400


async def test_a_second_user_sees_nothing_of_the_first(api: Api) -> None:
    memory = (await create(api, "doctor"))["memory"]
    url = f"/v1/memories/{memory['id']}"
    assert (await api.client.get("/v1/memories", headers=api.bob)).json() == []
    assert (await api.client.get(url, headers=api.bob)).status_code == 404
    assert (await api.client.delete(url, headers=api.bob)).status_code == 404
    assert (await api.client.post(f"{url}/reprocess", headers=api.bob)).status_code == 404
    assert (await api.client.post(f"{url}/restore", headers=api.bob)).status_code == 404
    assert (await api.client.patch(url, json={"title": "x"}, headers=api.bob)).status_code == 404
    events = {"events_idx": [0], "values": [True]}
    assert (await api.client.patch(f"{url}/events", json=events, headers=api.bob)).status_code == 404
    assert (await api.client.patch(f"{url}/visibility?value=public", headers=api.bob)).status_code == 404
    query = {"query": "knee pain appointment"}
    assert (await api.client.post("/v1/memories/search", json=query, headers=api.bob)).json() == []
    mine = (await api.client.get(url, headers=api.alice)).json()
    assert mine["structured"] == memory["structured"] and mine["visibility"] == "private"

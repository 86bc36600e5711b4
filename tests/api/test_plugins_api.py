"""The plugin routes of the contract: catalogue, enable/disable with the setup check, reviews."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.models import Memory, Message, Structured
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import create_app
from app.plugins import PluginInfo, hookimpl
from app.plugins.manager import build_plugin_manager
from builtin_plugins.prompt_plugins import PromptPlugins, needs_llm_key
from tests.api.conftest import Api, embedded_services
from tests.api.test_memories import body
from tests.fakes import static_server as fakes
from tests.fakes.static_server import StaticServer
from tests.unit.test_catalogue import OMI_JSON, write

pytestmark = pytest.mark.anyio

static_server = fakes.static_server

PLUGIN_FIELDS = {
    "id", "name", "author", "description", "image", "capabilities", "memory_prompt", "chat_prompt",
    "external_integration", "reviews", "user_review", "rating_avg", "rating_count", "enabled", "deleted",
}  # fmt: skip


class Recorder:
    """An installed plugin that answers every memory of the users who enabled it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(name="Recorder", author="Tests", capabilities=("memories",))

    @hookimpl
    async def on_memory_created(self, uid: str, memory: Memory) -> list[Message]:
        self.calls.append(uid)
        return [Message(id=f"recorder-{memory.id}", text="Recorded.", created_at=memory.created_at)]


class TipsLLM:
    """A language model that answers prompts (the port boundary, faked); structuring delegated."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def should_discard(self, transcript: str) -> bool:
        result: bool = await self.inner.should_discard(transcript)
        return result

    async def structure(self, transcript: str, started_at: datetime, language: str | None) -> Structured:
        result: Structured = await self.inner.structure(transcript, started_at, language)
        return result

    async def run_prompt(self, prompt: str, transcript: str) -> str | None:
        self.calls += 1
        return f"Tip number {self.calls}: listen more."


@dataclasses.dataclass
class PluginApi:
    client: AsyncTestClient  # type: ignore[type-arg]
    services: Services
    alice: dict[str, str]
    bob: dict[str, str]
    recorder: Recorder
    server: StaticServer

    async def listing(self, headers: dict[str, str], version: int = 1) -> dict[str, dict[str, Any]]:
        response = await self.client.get(f"/v{version}/plugins", headers=headers)
        assert response.status_code == 200, response.text
        return {p["id"]: p for p in response.json()}

    async def post(self, route: str, plugin_id: str, headers: dict[str, str], **kwargs: Any) -> Any:
        return await self.client.post(
            f"/v1/plugins/{route}", params={"plugin_id": plugin_id}, headers=headers, **kwargs
        )


def setup_entries(server: StaticServer) -> list[dict[str, Any]]:
    """Omi entries whose setup_completed_url answers yes, no, garbage, 500, or nothing."""
    answers = {
        "yes": ('{"is_setup_completed": true}', 200),
        "no": ('{"is_setup_completed": false}', 200),
        "garbage": ("<html>hello</html>", 200),
        "truthy": ('{"is_setup_completed": "yes"}', 200),
        "broken": ('{"is_setup_completed": true}', 500),
    }
    urls = {name: server.serve(f"/setup/{name}", text, status) for name, (text, status) in answers.items()}
    urls["query"] = urls["yes"] + "?plugin=x"
    urls["unreachable"] = "http://127.0.0.1:9/setup"
    return [
        {
            "id": f"setup-{name}",
            "name": f"Needs setup ({name})",
            "capabilities": ["external_integration"],
            "external_integration": {
                "triggers_on": "memory_creation",
                "webhook_url": f"{server.url}/webhook",
                "setup_completed_url": url,
                "setup_instructions_file_path": "/README.md",
            },
        }
        for name, url in urls.items()
    ]


async def start_api(
    tmp_path: Path,
    embedder: MiniLMEmbedder,
    server: StaticServer,
    *,
    answering_llm: bool = False,
    allow_private: bool = True,
) -> AsyncIterator[PluginApi]:
    path = tmp_path / "community-plugins.json"
    write(path, json.dumps([*OMI_JSON, *setup_entries(server)]))
    settings = Settings(
        data_dir=tmp_path / "data", plugins_catalogue=str(path), webhook_allow_private=allow_private
    )
    services = embedded_services(settings.data_dir, embedder)
    if answering_llm:
        services = dataclasses.replace(services, llm=TipsLLM(services.llm))
    recorder = Recorder()
    plugins = build_plugin_manager([recorder, PromptPlugins()], entry_points=[])
    app = create_app(settings, services=services, plugins=plugins)
    async with AsyncTestClient(app=app) as client:
        tokens = TokenService(services.kv)
        alice = {"Authorization": f"Bearer {await tokens.create('alice')}"}
        bob = {"Authorization": f"Bearer {await tokens.create('bob')}"}
        yield PluginApi(client, services, alice, bob, recorder, server)


@pytest.fixture
async def papi(
    tmp_path: Path, embedder: MiniLMEmbedder, static_server: StaticServer
) -> AsyncIterator[PluginApi]:
    async for api in start_api(tmp_path, embedder, static_server):
        yield api


# -- listing -------------------------------------------------------------------------------------


async def test_v1_and_v2_list_the_catalogue_in_the_contract_shape(papi: PluginApi) -> None:
    v1 = await papi.listing(papi.alice, 1)
    v2 = await papi.listing(papi.alice, 2)
    assert v1 == v2
    assert all(set(p) == PLUGIN_FIELDS for p in v1.values())
    assert {"Recorder", "mentor-01", "news-checker", "old-one", "setup-yes"} <= set(v1)
    assert "PromptPlugins" not in v1  # always on: part of the server, not a choice
    mentor = v1["mentor-01"]
    assert mentor["memory_prompt"] and mentor["capabilities"] == ["memories", "chat"]
    assert (mentor["enabled"], mentor["reviews"], mentor["user_review"]) == (False, [], None)
    assert (mentor["rating_avg"], mentor["rating_count"]) == (None, 0)
    assert v1["old-one"]["deleted"] is True
    assert v1["setup-yes"]["external_integration"]["setup_completed_url"].endswith("/setup/yes")
    assert v1["Recorder"]["author"] == "Tests"


async def test_the_routes_need_credentials(papi: PluginApi) -> None:
    for response in [
        await papi.client.get("/v1/plugins"),
        await papi.client.get("/v2/plugins", headers={"Authorization": "Bearer nope"}),
        await papi.client.post("/v1/plugins/enable", params={"plugin_id": "mentor-01"}),
        await papi.client.post("/v1/plugins/review", params={"plugin_id": "x"}, json={"score": 3}),
    ]:
        assert response.status_code == 401
        assert "detail" in response.json()


async def test_a_uid_parameter_that_is_not_the_caller_is_refused(papi: PluginApi) -> None:
    assert (
        await papi.client.get("/v1/plugins", params={"uid": "alice"}, headers=papi.alice)
    ).status_code == 200
    assert (
        await papi.client.get("/v1/plugins", params={"uid": "bob"}, headers=papi.alice)
    ).status_code == 403


# -- enable / disable --------------------------------------------------------------------------


async def test_enable_and_disable_are_per_user(papi: PluginApi) -> None:
    response = await papi.post("enable", "mentor-01", papi.alice)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert (await papi.listing(papi.alice))["mentor-01"]["enabled"] is True
    assert (await papi.listing(papi.bob))["mentor-01"]["enabled"] is False
    stored = await papi.services.kv.get("users:alice:enabled_plugins")
    assert json.loads(stored or "") == ["mentor-01"]
    response = await papi.post("disable", "mentor-01", papi.alice)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert (await papi.listing(papi.alice))["mentor-01"]["enabled"] is False


async def test_disabling_what_was_never_enabled_is_fine(papi: PluginApi) -> None:
    response = await papi.post("disable", "no-such-plugin", papi.alice)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("plugin_id", ["no-such-plugin", "old-one", "PromptPlugins"])
async def test_enabling_an_unknown_deleted_or_always_on_plugin_is_a_404(
    papi: PluginApi, plugin_id: str
) -> None:
    response = await papi.post("enable", plugin_id, papi.alice)
    assert response.status_code == 404
    assert response.json()["detail"] == "Plugin not found"


@pytest.mark.parametrize("route", ["enable", "disable", "review"])
async def test_a_missing_or_oversized_plugin_id_is_a_400(papi: PluginApi, route: str) -> None:
    missing = await papi.client.post(f"/v1/plugins/{route}", headers=papi.alice, json={"score": 3})
    oversized = await papi.post(route, "x" * 129, papi.alice, json={"score": 3})
    for response in (missing, oversized):
        assert response.status_code == 400, response.text
        assert "detail" in response.json()


# -- setup_completed_url ----------------------------------------------------------------------------


async def test_enable_asks_the_setup_completed_url_with_the_uid(papi: PluginApi) -> None:
    response = await papi.post("enable", "setup-yes", papi.alice)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert papi.server.queries("/setup/yes") == [{"uid": ["alice"]}]
    assert (await papi.listing(papi.alice))["setup-yes"]["enabled"] is True


async def test_a_setup_url_with_a_query_gets_the_uid_appended(papi: PluginApi) -> None:
    assert (await papi.post("enable", "setup-query", papi.alice)).status_code == 200
    assert papi.server.queries("/setup/yes") == [{"plugin": ["x"], "uid": ["alice"]}]


@pytest.mark.parametrize("name", ["no", "garbage", "truthy", "broken"])
async def test_enable_is_refused_until_the_setup_is_completed(papi: PluginApi, name: str) -> None:
    response = await papi.post("enable", f"setup-{name}", papi.alice)
    assert response.status_code == 400
    assert response.json()["detail"] == "Plugin setup is not completed"
    assert (await papi.listing(papi.alice))[f"setup-{name}"]["enabled"] is False


async def test_an_unreachable_setup_url_is_a_clear_400(papi: PluginApi) -> None:
    response = await papi.post("enable", "setup-unreachable", papi.alice)
    assert response.status_code == 400
    assert "did not answer" in response.json()["detail"]
    assert (await papi.listing(papi.alice))["setup-unreachable"]["enabled"] is False


async def test_a_private_setup_url_is_refused_unless_allowed(
    tmp_path: Path, embedder: MiniLMEmbedder, static_server: StaticServer
) -> None:
    async for api in start_api(tmp_path, embedder, static_server, allow_private=False):
        response = await api.post("enable", "setup-yes", api.alice)
        assert response.status_code == 400
        assert "not a public address" in response.json()["detail"]
        assert static_server.queries("/setup/yes") == []


# -- reviews -------------------------------------------------------------------------------------------


async def test_reviews_give_ratings_and_the_callers_own_review(papi: PluginApi) -> None:
    ok = {"status": "ok"}
    response = await papi.post("review", "mentor-01", papi.alice, json={"score": 2, "review": "meh"})
    assert (response.status_code, response.json()) == (200, ok)
    await papi.post("review", "mentor-01", papi.bob, json={"score": 5, "review": "great"})
    await papi.post("review", "mentor-01", papi.alice, json={"score": 4, "review": "better"})  # replaces
    mentor = (await papi.listing(papi.alice))["mentor-01"]
    assert (mentor["rating_avg"], mentor["rating_count"]) == (4.5, 2)
    assert mentor["user_review"]["uid"] == "alice"
    assert (mentor["user_review"]["score"], mentor["user_review"]["review"]) == (4.0, "better")
    assert set(mentor["user_review"]) == {"uid", "rated_at", "score", "review"}
    assert {r["uid"] for r in mentor["reviews"]} == {"alice", "anonymous"}  # bob's uid is not shown
    bobs = (await papi.listing(papi.bob))["mentor-01"]["user_review"]
    assert (bobs["uid"], bobs["review"]) == ("bob", "great")


async def test_a_review_without_text_is_fine(papi: PluginApi) -> None:
    assert (await papi.post("review", "Recorder", papi.alice, json={"score": 3})).status_code == 200
    assert (await papi.listing(papi.alice))["Recorder"]["user_review"]["review"] == ""


@pytest.mark.parametrize(
    "payload", [{"score": 0}, {"score": 5.5}, {"score": "five"}, {"review": "no score"}, [], {"score": None}]
)
async def test_a_bad_review_is_a_400(papi: PluginApi, payload: Any) -> None:
    response = await papi.post("review", "mentor-01", papi.alice, json=payload)
    assert response.status_code == 400
    assert "detail" in response.json()
    assert (await papi.listing(papi.alice))["mentor-01"]["rating_count"] == 0


async def test_reviewing_an_unknown_plugin_is_a_404(papi: PluginApi) -> None:
    response = await papi.post("review", "no-such-plugin", papi.alice, json={"score": 4})
    assert response.status_code == 404
    assert await papi.services.kv.get("plugins:no-such-plugin:reviews") is None


async def test_the_list_is_sorted_by_weighted_rating(papi: PluginApi) -> None:
    await papi.post("review", "news-checker", papi.alice, json={"score": 5})
    await papi.post("review", "Recorder", papi.alice, json={"score": 1})
    await papi.post("review", "mentor-01", papi.alice, json={"score": 4})
    await papi.post("review", "mentor-01", papi.bob, json={"score": 5})
    order = list(await papi.listing(papi.alice))
    assert order[:2] == ["mentor-01", "news-checker"]  # 4.5 from two beats 5 from one
    assert order[-1] == "Recorder"  # one 1-star review sinks below the unrated


# -- dispatch ----------------------------------------------------------------------------------------


async def test_a_plugin_runs_only_for_users_who_enabled_it(papi: PluginApi) -> None:
    await papi.post("enable", "Recorder", papi.alice)
    alices = (await papi.client.post("/v1/memories", json=body("standup"), headers=papi.alice)).json()
    assert [(m["plugin_id"], m["text"]) for m in alices["messages"]] == [("Recorder", "Recorded.")]
    bobs = (await papi.client.post("/v1/memories", json=body("standup"), headers=papi.bob)).json()
    assert bobs["messages"] == []
    assert papi.recorder.calls == ["alice"]
    await papi.post("disable", "Recorder", papi.alice)
    again = (await papi.client.post("/v1/memories", json=body("standup"), headers=papi.alice)).json()
    assert again["messages"] == []
    assert papi.recorder.calls == ["alice"]


async def test_prompt_plugins_with_the_embedded_model_add_nothing(papi: PluginApi) -> None:
    await papi.post("enable", "mentor-01", papi.alice)
    memory = (await papi.client.post("/v1/memories", json=body("standup"), headers=papi.alice)).json()[
        "memory"
    ]
    assert memory["plugins_results"] == []
    record = await papi.services.kv.get(needs_llm_key("mentor-01"))
    assert record is not None and "since" in json.loads(record)


async def test_prompt_plugin_results_land_in_the_memory_and_reprocess_replaces_them(
    tmp_path: Path, embedder: MiniLMEmbedder, static_server: StaticServer
) -> None:
    async for api in start_api(tmp_path, embedder, static_server, answering_llm=True):
        await api.post("enable", "mentor-01", api.alice)
        created = await api.client.post("/v1/memories", json=body("standup"), headers=api.alice)
        memory = created.json()["memory"]
        assert memory["plugins_results"] == [
            {"plugin_id": "mentor-01", "content": "Tip number 1: listen more."}
        ]
        reprocessed = await api.client.post(f"/v1/memories/{memory['id']}/reprocess", headers=api.alice)
        assert reprocessed.status_code == 200
        assert reprocessed.json()["plugins_results"] == [
            {"plugin_id": "mentor-01", "content": "Tip number 2: listen more."}
        ]
        stored = await api.client.get(f"/v1/memories/{memory['id']}", headers=api.alice)
        assert len(stored.json()["plugins_results"]) == 1
        bobs = await api.client.post("/v1/memories", json=body("standup"), headers=api.bob)
        assert bobs.json()["memory"]["plugins_results"] == []


# -- the example plugin, installed with pip -----------------------------------------------------------


def _hello_installed() -> importlib.metadata.EntryPoint | None:
    found = importlib.metadata.entry_points(group="omi_backend", name="hello")
    return next(iter(found), None)


@pytest.mark.skipif(
    _hello_installed() is None, reason="pip install -e examples/hello_plugin (make install does)"
)
async def test_the_installed_hello_plugin_is_listed_and_runs_for_users_who_enable_it(api: Api) -> None:
    ep = _hello_installed()
    assert ep is not None and ep.value == "hello_plugin:HelloPlugin"
    listing = {p["id"]: p for p in (await api.client.get("/v1/plugins", headers=api.alice)).json()}
    assert listing["hello"]["name"] == "Hello"
    assert listing["hello"]["enabled"] is False
    enabled = await api.client.post("/v1/plugins/enable", params={"plugin_id": "hello"}, headers=api.alice)
    assert enabled.status_code == 200

    alices = (await api.client.post("/v1/memories", json=body("standup"), headers=api.alice)).json()
    [hello] = [m for m in alices["messages"] if m["plugin_id"] == "hello"]
    assert hello["text"].startswith("Hello!")
    assert hello["memories_id"] == [alices["memory"]["id"]]
    bobs = (await api.client.post("/v1/memories", json=body("standup"), headers=api.bob)).json()
    assert [m for m in bobs["messages"] if m["plugin_id"] == "hello"] == []
    stored = msgspec.json.decode((await api.client.get("/v1/messages", headers=api.alice)).content)
    assert any(m["plugin_id"] == "hello" for m in stored)

"""The prompt_plugins built-in: enabled memory prompts through the language model, never invented."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app import testing
from app.backends.sqlite_kv import SQLiteKeyValue
from app.config import Settings
from app.core.models import Memory, Structured
from app.plugins import Catalogue, PluginContext
from app.plugins.host import PluginHost
from app.plugins.manager import new_plugin_manager, register_plugin
from builtin_plugins.prompt_plugins import PromptPlugins, build_prompt, needs_llm_key
from tests.unit.test_catalogue import OMI_JSON, write

pytestmark = pytest.mark.anyio

sample_memory = testing.sample_memory

PROMPTS = [
    *OMI_JSON,
    {
        "id": "summarizer",
        "name": "Summarizer",
        "description": "One-line summaries.",
        "capabilities": ["memories"],
        "memory_prompt": "Summarise the conversation in one line.",
    },
    {"id": "chat-only", "name": "Chat", "capabilities": ["chat"], "chat_prompt": "Chat."},
]


class NoLLM:
    """The embedded model's answer to free-form prompts: it cannot."""

    async def should_discard(self, transcript: str) -> bool:
        return False

    async def structure(self, transcript: str, started_at: datetime, language: str | None) -> Structured:
        return Structured(title="t")

    async def run_prompt(self, prompt: str, transcript: str) -> str | None:
        return None


class AnsweringLLM(NoLLM):
    """A language model that answers every prompt (the port boundary, faked)."""

    def __init__(self, answer: str = "") -> None:
        self.answer = answer
        self.prompts: list[tuple[str, str]] = []

    async def run_prompt(self, prompt: str, transcript: str) -> str | None:
        self.prompts.append((prompt, transcript))
        if self.answer:
            return self.answer
        task = prompt.split("Your task: ", 1)[1].split("\n", 1)[0]
        return f"Answer to {task!r} #{len(self.prompts)}"


@dataclass
class Rig:
    kv: SQLiteKeyValue
    catalogue: Catalogue
    host: PluginHost
    plugin: PromptPlugins

    async def start(self, llm: Any) -> None:
        context = PluginContext(
            settings=Settings(),
            kv=self.kv,
            store=None,  # type: ignore[arg-type]
            blobs=None,  # type: ignore[arg-type]
            llm=llm,
            create_memory=None,  # type: ignore[arg-type]
            is_enabled=self.catalogue.is_enabled,
            extras={"catalogue": self.catalogue},
        )
        await self.catalogue.load()
        await self.host.on_startup(context)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    path = tmp_path / "plugins.json"
    write(path, json.dumps(PROMPTS))
    kv = SQLiteKeyValue(tmp_path / "kv.db")
    pm = new_plugin_manager()
    plugin = PromptPlugins()
    register_plugin(pm, plugin, "prompt_plugins")
    catalogue = Catalogue(kv, installed=lambda: host.plugin_infos(), source=str(path))
    host = PluginHost(pm, timeout=5, is_enabled=catalogue.is_enabled)
    yield Rig(kv=kv, catalogue=catalogue, host=host, plugin=plugin)
    host.close()
    await kv.close()


async def test_it_is_always_on_and_not_in_the_catalogue(rig: Rig) -> None:
    await rig.start(NoLLM())
    info = rig.host.info("prompt_plugins")
    assert info is not None and info.always_on
    assert rig.catalogue.entry("prompt_plugins") is None


async def test_enabled_prompts_become_plugin_results(rig: Rig, sample_memory: Memory) -> None:
    llm = AnsweringLLM()
    await rig.start(llm)
    await rig.catalogue.enable("summarizer", "alice")
    await rig.catalogue.enable("chat-only", "alice")  # no memory prompt: not run
    await rig.catalogue.enable("old-one", "alice")  # deleted: not run
    results = await rig.host.on_memory_processing("alice", sample_memory)
    assert [(r.plugin_id, r.content) for r in results] == [
        ("summarizer", "Answer to 'Summarise the conversation in one line.' #1")
    ]
    [(prompt, transcript)] = llm.prompts
    assert prompt == build_prompt(rig.catalogue.entry("summarizer"))  # type: ignore[arg-type]
    assert "Summarizer" in prompt
    first = sample_memory.transcript_segments[0]
    assert transcript.splitlines()[0] == f"User: {first.text}"
    assert transcript.splitlines()[1].startswith("Speaker 1: ")
    assert rig.host.errors("prompt_plugins") == []


async def test_a_user_who_did_not_enable_a_prompt_gets_nothing(rig: Rig, sample_memory: Memory) -> None:
    llm = AnsweringLLM()
    await rig.start(llm)
    await rig.catalogue.enable("summarizer", "alice")
    assert await rig.host.on_memory_processing("bob", sample_memory) == []
    assert llm.prompts == []


async def test_several_enabled_prompts_each_add_a_result(rig: Rig, sample_memory: Memory) -> None:
    await rig.start(AnsweringLLM())
    await rig.catalogue.enable("summarizer", "alice")
    await rig.catalogue.enable("mentor-01", "alice")
    results = await rig.host.on_memory_processing("alice", sample_memory)
    assert sorted(r.plugin_id for r in results) == ["mentor-01", "summarizer"]


async def test_a_too_short_answer_means_nothing_to_say(rig: Rig, sample_memory: Memory) -> None:
    await rig.start(AnsweringLLM(answer="  ok \n"))
    await rig.catalogue.enable("summarizer", "alice")
    assert await rig.host.on_memory_processing("alice", sample_memory) == []


async def test_without_an_llm_nothing_is_invented_and_the_need_is_recorded(
    rig: Rig, sample_memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.start(NoLLM())
    await rig.catalogue.enable("summarizer", "alice")
    with caplog.at_level(logging.WARNING):
        assert await rig.host.on_memory_processing("alice", sample_memory) == []
        assert await rig.host.on_memory_processing("alice", sample_memory) == []
    record = json.loads(await rig.kv.get(needs_llm_key("summarizer")) or "null")
    assert set(record) == {"since", "reason"}
    assert await rig.kv.get(needs_llm_key("mentor-01")) is None  # not enabled by anyone: not asked
    warnings = [r for r in caplog.records if "needs an LLM" in r.getMessage()]
    assert len(warnings) == 1  # once, not per memory
    assert rig.host.errors("prompt_plugins") == []


async def test_the_record_goes_once_an_llm_answers(rig: Rig, sample_memory: Memory) -> None:
    await rig.start(NoLLM())
    await rig.catalogue.enable("summarizer", "alice")
    await rig.host.on_memory_processing("alice", sample_memory)
    rig.plugin.context = PluginContext(**{**vars_of(rig.plugin.context), "llm": AnsweringLLM()})
    assert len(await rig.host.on_memory_processing("alice", sample_memory)) == 1
    assert await rig.kv.get(needs_llm_key("summarizer")) is None


async def test_a_failing_model_is_logged_and_the_other_prompts_still_run(
    rig: Rig, sample_memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(AnsweringLLM):
        async def run_prompt(self, prompt: str, transcript: str) -> str | None:
            if "Summarizer" in prompt:
                raise ConnectionError("model is down")
            return await super().run_prompt(prompt, transcript)

    await rig.start(Flaky())
    await rig.catalogue.enable("summarizer", "alice")
    await rig.catalogue.enable("mentor-01", "alice")
    results = await rig.host.on_memory_processing("alice", sample_memory)
    assert [r.plugin_id for r in results] == ["mentor-01"]
    assert any("summarizer" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


async def test_without_start_up_it_does_nothing(rig: Rig, sample_memory: Memory) -> None:
    assert await rig.plugin.on_memory_processing("alice", sample_memory) is None


def vars_of(context: PluginContext | None) -> dict[str, Any]:
    assert context is not None
    return {name: getattr(context, name) for name in PluginContext.__dataclass_fields__}

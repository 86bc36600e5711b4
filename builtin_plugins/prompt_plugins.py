"""Prompt plugins: the Omi catalogue's ``memory_prompt`` entries, run through the language model.

For every kept memory, each Omi catalogue entry with the ``memories`` capability and a
``memory_prompt`` that the memory's owner enabled is asked about the conversation; a useful
answer becomes a ``plugins_results`` entry ``{plugin_id: <entry id>, content: <answer>}``.
Reprocessing a memory asks again and the new results replace the old ones.

The host calls a hook per installed plugin, not per catalogue entry, so this plugin is
always on and checks each entry's enablement itself.

The embedded language model cannot answer free-form prompts (``run_prompt`` returns
``None``). Nothing is invented then: no result is added, and the entry is recorded as
needing an LLM under ``plugins:{id}:needs_llm`` (a JSON object ``{"since", "reason"}``, kept
until the entry gets an answer) with one warning in the log.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from app.core.models import Memory, PluginResult, utcnow
from app.plugins import Catalogue, Plugin, PluginContext, PluginInfo, hookimpl

__all__ = ["MIN_ANSWER_CHARS", "PromptPlugins", "build_prompt", "needs_llm_key"]

log = logging.getLogger("omi_backend.plugins.prompt_plugins")

MIN_ANSWER_CHARS = 5
"""Shorter answers mean "nothing to say about this conversation" and are dropped."""


def needs_llm_key(plugin_id: str) -> str:
    """The KeyValue key recording that a prompt plugin cannot run without an LLM."""
    return f"plugins:{plugin_id}:needs_llm"


def build_prompt(entry: Plugin) -> str:
    """The instructions the language model gets for ``entry``'s memory prompt."""
    return (
        f"You are {entry.name}. {entry.description}\n"
        f"Your task: {entry.memory_prompt}\n"
        "If the conversation has nothing to do with your task, answer with an empty text. "
        "Answer in plain text without markdown, concise and clear."
    )


def _conversation(memory: Memory) -> str:
    """The transcript, one ``Speaker: text`` line per segment (photo descriptions without one)."""
    lines = [
        f"{'User' if s.is_user else f'Speaker {s.speaker_id}'}: {s.text.strip()}"
        for s in memory.transcript_segments
        if s.text.strip()
    ]
    if not lines:
        lines = [p.description.strip() for p in memory.photos if p.description.strip()]
    return "\n".join(lines)


class NeedsLLM(msgspec.Struct, frozen=True):
    since: str
    reason: str


class PromptPlugins:
    """Runs the enabled memory prompts of the Omi catalogue; one instance per app."""

    def __init__(self) -> None:
        self.context: PluginContext | None = None

    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(
            name="Prompt plugins",
            author="omi-backend",
            description="Runs the memory prompts of the Omi plugins each user enabled.",
            capabilities=("memories",),
            always_on=True,
        )

    @hookimpl
    def on_startup(self, context: PluginContext) -> None:
        self.context = context

    @hookimpl
    async def on_memory_processing(self, uid: str, memory: Memory) -> list[PluginResult] | None:
        context = self.context
        catalogue = None if context is None else context.extras.get("catalogue")
        if context is None or not isinstance(catalogue, Catalogue):
            return None
        prompts = [e for e in catalogue.omi_entries() if e.has("memories") and e.memory_prompt]
        if not prompts:
            return None
        enabled = await asyncio.gather(*(context.is_enabled(e.id, uid) for e in prompts))
        chosen = [entry for entry, on in zip(prompts, enabled, strict=True) if on]
        transcript = _conversation(memory)
        if not chosen or not transcript:
            return None
        answers = await asyncio.gather(*(self._ask(context, e, transcript) for e in chosen))
        return [result for result in answers if result is not None]

    async def _ask(self, context: PluginContext, entry: Plugin, transcript: str) -> PluginResult | None:
        try:
            answer = await context.llm.run_prompt(build_prompt(entry), transcript)
        except Exception:
            log.exception("prompt plugin %s: the language model failed", entry.id)
            return None
        if answer is None:
            record = NeedsLLM(
                since=utcnow().isoformat(), reason="the configured language model cannot run prompts"
            )
            if await context.kv.add(needs_llm_key(entry.id), msgspec.json.encode(record).decode()):
                log.warning(
                    "prompt plugin %s needs an LLM (set OMI_LANGUAGE_MODEL to one); it adds nothing",
                    entry.id,
                )
            return None
        await context.kv.delete(needs_llm_key(entry.id))
        answer = answer.strip()
        if len(answer) < MIN_ANSWER_CHARS:
            return None
        return PluginResult(plugin_id=entry.id, content=answer)

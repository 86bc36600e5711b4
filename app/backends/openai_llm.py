"""The production :class:`~app.core.ports.LanguageModel`: OpenAI chat completions.

Any OpenAI-compatible server works through ``base_url``. Structuring uses Structured
Outputs (``response_format`` ``json_schema``, ``strict``) with a schema built from the
``Structured`` struct by msgspec and made acceptable to strict mode (``structured_schema``);
the reply is decoded back into ``Structured`` by msgspec. The model is told when the
conversation started and in which timezone, so "tomorrow at three" becomes a dated event.

Failures: timeouts, connection errors, 408/409/429/5xx are retried by the SDK itself
(``max_retries``, exponential backoff, ``Retry-After`` honoured); what still fails, and any
other API error, is raised as :class:`~app.core.errors.BackendUnavailable`. A reply that
does not decode (not JSON, not the schema, a refusal, cut off) is asked for once more and
then raised as ``BackendUnavailable`` too: a failed structuring is an error to retry later,
never a silent discard or an empty memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from app.core.errors import BackendUnavailable
from app.core.models import CATEGORIES, Structured, aware

__all__ = ["OpenAILanguageModel", "structured_schema"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKEND = "openai"
DISCARD_MAX_WORDS = 100  # longer transcripts are always kept, as the embedded structurer does

# Keywords strict mode accepts; msgspec's others (default, maxLength, title) are dropped.
_STRICT_KEYWORDS = frozenset(
    [
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "description",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
    ]
)
# Fields that are the app's state, not the model's to decide: left out of the schema.
_APP_STATE = {"ActionItem": {"completed"}, "Event": {"created"}}
_DESCRIPTIONS = {
    ("Structured", "title"): "A short, specific title of the conversation, at most 10 words.",
    (
        "Structured",
        "overview",
    ): "A concise summary of the conversation: who discussed what, what was decided.",
    ("Structured", "emoji"): "One emoji that fits the conversation.",
    ("Structured", "category"): "The category that fits the conversation best; other when none does.",
    (
        "Structured",
        "action_items",
    ): "Tasks someone committed to or was asked to do; empty when there are none.",
    (
        "Structured",
        "events",
    ): "Meetings, appointments and calls with a date or time; empty when there are none.",
    ("ActionItem", "description"): "The task as a short imperative sentence.",
    ("Event", "title"): "A short title for the calendar event.",
    ("Event", "start"): "When it starts: ISO 8601 date and time with the UTC offset.",
    ("Event", "description"): "What the event is about, in one sentence.",
    ("Event", "duration"): "Length in minutes: 30 unless the conversation says otherwise.",
}

STRUCTURE_PROMPT = """\
You turn the transcript of a conversation, recorded by a wearable, into a memory.
Fill in every field from the conversation only; never invent facts, tasks or events.
The category is one of: {categories}.
{when}
{language}"""

DISCARD_PROMPT = """\
You decide whether the transcript of a conversation, recorded by a wearable, is worth keeping
as a memory. Discard it (discard: true) only when it holds nothing: noise, fragments,
greetings or small talk without information. Keep it (discard: false) when it holds a fact,
a plan, a task, a decision, a question or an idea worth remembering."""

PLUGIN_PROMPT = """\
You are a plugin that runs on conversations recorded by a wearable. Follow the plugin's
instructions, answer from the conversation only, and be brief."""

_DISCARD_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"discard": {"type": "boolean", "description": "true to discard, false to keep"}},
    "required": ["discard"],
    "additionalProperties": False,
}


class _Discard(msgspec.Struct):
    discard: bool


class _Unusable(ValueError):
    """The model answered, but not with something this adapter can use."""


def _strict(node: Any, owner: str | None = None) -> Any:
    """``node`` (a msgspec schema) in the subset strict mode accepts, every object closed."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items() if key in _STRICT_KEYWORDS}
    if "enum" in out and "type" not in out and all(isinstance(v, str) for v in out["enum"]):
        out["type"] = "string"
    if out.get("type") == "object" and owner is not None:
        props = {
            name: _strict(sub)
            for name, sub in node.get("properties", {}).items()
            if name not in _APP_STATE.get(owner, ())
        }
        for name, sub in props.items():
            if (text := _DESCRIPTIONS.get((owner, name))) is not None:
                sub["description"] = text
        if owner == "Event":
            props["start"]["format"] = "date-time"
        out.update(properties=props, required=list(props), additionalProperties=False)
    return out


def structured_schema() -> dict[str, Any]:
    """The JSON schema of ``Structured`` for strict Structured Outputs.

    msgspec's schema is a ``$ref`` into ``$defs``; strict mode wants an object at the root,
    so ``Structured`` is inlined there and ``ActionItem``/``Event`` stay in ``$defs``.
    """
    defs = msgspec.json.schema(Structured)["$defs"]
    root: dict[str, Any] = _strict(defs["Structured"], "Structured")
    root["$defs"] = {name: _strict(sub, name) for name, sub in defs.items() if name != "Structured"}
    return root


def _json_format(name: str, schema: dict[str, Any]) -> ResponseFormatJSONSchema:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _decode_structured(content: str, started_at: datetime) -> Structured:
    """``Structured`` from the reply; an event start without an offset is in ``started_at``'s zone."""
    raw = msgspec.json.decode(content)
    events = raw.get("events") if isinstance(raw, dict) else None
    for event in events if isinstance(events, list) else []:
        if isinstance(event, dict) and isinstance(event.get("start"), str):
            start = datetime.fromisoformat(event["start"])
            event["start"] = start if start.tzinfo else start.replace(tzinfo=started_at.tzinfo)
    return msgspec.convert(raw, Structured)


class OpenAILanguageModel:
    """``LanguageModel`` on OpenAI's chat completions (or a compatible server).

    Args:
        api_key: The API key.
        base_url: Another OpenAI-compatible server, e.g. ``http://localhost:8000/v1``.
        model: A chat model that supports Structured Outputs.
        timeout: Seconds one HTTP attempt may take.
        max_retries: Retries the SDK makes after a transient failure.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        timeout: float = 30,
        max_retries: int = 3,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        self._model = model
        self._schema = structured_schema()

    async def should_discard(self, transcript: str) -> bool:
        """``True`` when the model finds nothing worth keeping; long transcripts are always kept."""
        words = transcript.split()
        if not words:
            return True
        if len(words) > DISCARD_MAX_WORDS:
            return False
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": DISCARD_PROMPT},
            {"role": "user", "content": transcript},
        ]
        reply = await self._ask_json(
            messages,
            _json_format("discard", _DISCARD_SCHEMA),
            lambda c: msgspec.json.decode(c, type=_Discard),
        )
        return reply.discard

    async def structure(self, transcript: str, started_at: datetime, language: str | None) -> Structured:
        """Title, overview, emoji, category, action items and events of a conversation."""
        started_at = aware(started_at)
        when = (
            f"The conversation started at {started_at.isoformat()} ({started_at:%A}, timezone "
            f"{started_at.tzname() or 'UTC'}). Resolve relative dates and times such as 'tomorrow at 3' "
            "or 'next Tuesday' against that moment, and write each event's start with that offset."
        )
        in_language = (
            f"Write the title, overview, action items and events in the language with code '{language}'."
            if language
            else "Write the title, overview, action items and events in the conversation's language."
        )
        system = STRUCTURE_PROMPT.format(categories=", ".join(CATEGORIES), when=when, language=in_language)
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": system},
            {"role": "user", "content": transcript},
        ]
        return await self._ask_json(
            messages, _json_format("memory", self._schema), lambda c: _decode_structured(c, started_at)
        )

    async def run_prompt(self, prompt: str, transcript: str) -> str | None:
        """The model's answer to a plugin's prompt about a transcript (``None`` if it gave none)."""
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": PLUGIN_PROMPT},
            {"role": "user", "content": f"Instructions:\n{prompt}\n\nConversation:\n{transcript}"},
        ]
        try:
            text = await self._complete(messages, None)
        except _Unusable:
            return None
        return text.strip() or None

    async def close(self) -> None:
        """Close the SDK's connection pool."""
        await self._client.close()

    async def _ask_json(
        self,
        messages: list[ChatCompletionMessageParam],
        response_format: ResponseFormatJSONSchema,
        decode: Callable[[str], T],
    ) -> T:
        """Ask, decode; ask once more when the reply does not decode, then give up loudly."""
        for attempt in (1, 2):
            try:
                return decode(await self._complete(messages, response_format))
            except (_Unusable, msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
                problem: Exception = exc
                logger.warning("openai reply unusable (try %d of 2): %s", attempt, exc)
        raise BackendUnavailable(BACKEND, problem) from problem

    async def _complete(
        self, messages: list[ChatCompletionMessageParam], response_format: ResponseFormatJSONSchema | None
    ) -> str:
        try:
            if response_format is None:
                completion = await self._client.chat.completions.create(model=self._model, messages=messages)
            else:
                completion = await self._client.chat.completions.create(
                    model=self._model, messages=messages, response_format=response_format
                )
        except openai.APIError as exc:
            raise BackendUnavailable(BACKEND, exc) from exc
        if not completion.choices:
            raise _Unusable("the reply has no choices")
        choice = completion.choices[0]
        if choice.message.refusal:
            raise _Unusable(f"the model refused: {choice.message.refusal}")
        if choice.finish_reason != "stop":
            raise _Unusable(f"the reply was cut off ({choice.finish_reason})")
        return choice.message.content or ""

"""A fake OpenAI-compatible API over HTTP, driven in tests by the real ``openai`` SDK.

Wire format as OpenAI documents it (point the SDK at it with ``base_url=f"{fake.url}/v1"``):

- ``POST /v1/chat/completions``: a ``chat.completion`` object. With ``response_format``
  ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` the content is a
  JSON document that validates against the schema (``$defs``/``$ref`` resolved); with
  ``strict: true`` the schema must meet strict mode's rules (every object closed with
  ``additionalProperties: false`` and listing every property in ``required``, a plain
  object at the root, no unsupported keywords) or the request is a 400, as on the real
  service. The content is derived from the conversation, deterministically: a title from
  the first words of the last user message, an enum value named in it, one action item per
  sentence with a cue phrase, an event per sentence that says "tomorrow" (at the hour it
  names, a day after the first ISO datetime in the messages), ``discard`` true under five
  words. Without ``response_format`` the reply is a short text.
- ``POST /v1/embeddings``: ``encoding_format`` ``float`` (the API's default) or ``base64``
  (little-endian float32). Vectors are hashed bags of words, unit length, of the model's
  dimension (``text-embedding-3-small`` 1536, ``-3-large`` 3072, ``ada-002`` 1536) or of
  ``dimensions`` (v3 models only, at most the model's own).
- ``GET /v1/models/{id}``.

It checks ``Authorization: Bearer``, records every request, and fails on demand
(``fail_next``, ``stall_next`` from ``FakeHTTPService``; ``garble_next`` for chat replies
that do not validate). Errors are ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest

from app.backends.openai_embedder import OpenAIEmbedder
from app.backends.openai_llm import OpenAILanguageModel
from tests.fakes.pinecone_server import FakeHTTPService, HTTPError, RecordedRequest, Reply

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "FakeOpenAI",
    "SchemaError",
    "embed_text",
    "openai_embedder",
    "openai_fake",
    "openai_llm",
    "validate",
]

OPENAI_KEY = "sk-test-key"
EMBEDDING_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
CHAT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
_UNSUPPORTED = frozenset(
    [
        "default",
        "minLength",
        "maxLength",
        "patternProperties",
        "unevaluatedProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "unevaluatedItems",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
    ]
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}
_ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})")
_CUE_RE = re.compile(
    r"\b(need to|have to|remind me|don't forget|do not forget|make sure|should|todo)\b", re.I
)
_AT_RE = re.compile(r"\bat (\d{1,2})(?::(\d{2}))?\s*(am|pm)?", re.I)


class SchemaError(ValueError):
    pass


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaError(f"unsupported $ref {ref!r}")
        node: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                raise SchemaError(f"$ref {ref!r} does not resolve")
            node = node[part]
        schema = node
    return schema


def strict_problems(schema: dict[str, Any], root: dict[str, Any], where: str = "") -> list[str]:
    """What strict mode would reject in ``schema`` (empty when it is acceptable)."""
    problems = [f"{where or '(root)'}: '{k}' is not permitted" for k in _UNSUPPORTED & schema.keys()]
    for name, sub in schema.get("$defs", {}).items():
        problems += strict_problems(sub, root, f"{where}/$defs/{name}")
    if "$ref" in schema:
        try:
            _resolve(schema, root)
        except SchemaError as exc:
            problems.append(f"{where}: {exc}")
        return problems
    if schema.get("type") == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            problems.append(
                f"{where or '(root)'}: 'additionalProperties' is required to be supplied and to be false"
            )
        if sorted(schema.get("required", [])) != sorted(props):
            problems.append(f"{where or '(root)'}: 'required' is required to include every key in properties")
        for name, sub in props.items():
            problems += strict_problems(sub, root, f"{where}/{name}")
    for key in ("anyOf",):
        for i, sub in enumerate(schema.get(key, [])):
            problems += strict_problems(sub, root, f"{where}/{key}/{i}")
    if isinstance(schema.get("items"), dict):
        problems += strict_problems(schema["items"], root, f"{where}/items")
    return problems


def validate(
    instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, where: str = "$"
) -> None:
    """Raise ``SchemaError`` unless ``instance`` validates (the keywords strict mode allows)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        for sub in schema["anyOf"]:
            try:
                return validate(instance, sub, root, where)
            except SchemaError:
                continue
        raise SchemaError(f"{where}: matches no branch of anyOf")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    expected = schema.get("type")
    if expected in ("integer", "number"):
        if isinstance(instance, bool) or not isinstance(
            instance, int if expected == "integer" else int | float
        ):
            raise SchemaError(f"{where}: expected {expected}")
        if not schema.get("minimum", instance) <= instance <= schema.get("maximum", instance):
            raise SchemaError(f"{where}: {instance} is out of range")
    elif expected is not None and not isinstance(instance, kinds[expected]):
        raise SchemaError(f"{where}: expected {expected}, got {type(instance).__name__}")
    if "enum" in schema and instance not in schema["enum"]:
        raise SchemaError(f"{where}: {instance!r} is not one of the enum")
    if "const" in schema and instance != schema["const"]:
        raise SchemaError(f"{where}: expected {schema['const']!r}")
    if schema.get("format") == "date-time" and not _ISO_RE.fullmatch(instance):
        raise SchemaError(f"{where}: {instance!r} is not a date-time with an offset")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in instance:
                raise SchemaError(f"{where}: {name!r} is missing")
        if schema.get("additionalProperties") is False and (extra := instance.keys() - props.keys()):
            raise SchemaError(f"{where}: unexpected {sorted(extra)}")
        for name, value in instance.items():
            if name in props:
                validate(value, props[name], root, f"{where}.{name}")
    if isinstance(instance, list):
        if not schema.get("minItems", 0) <= len(instance) <= schema.get("maxItems", len(instance)):
            raise SchemaError(f"{where}: wrong number of items")
        for i, value in enumerate(instance):
            validate(value, schema.get("items", {}), root, f"{where}[{i}]")
    return None


# --- content generation ----------------------------------------------------------------


@dataclass
class _Context:
    text: str  # the last user message
    started_at: datetime | None  # the first ISO datetime anywhere in the messages
    sentence: str | None = None  # the sentence an array item is made from


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _event_start(ctx: _Context) -> str:
    base = ctx.started_at or datetime.fromisoformat("2024-01-01T09:00:00+00:00")
    start = base + timedelta(days=1)
    if ctx.sentence and (at := _AT_RE.search(ctx.sentence)):
        hour = int(at.group(1)) % 12 + (
            12 if (at.group(3) or "").lower() == "pm" or int(at.group(1)) < 8 else 0
        )
        start = start.replace(hour=hour % 24, minute=int(at.group(2) or 0), second=0, microsecond=0)
    return start.isoformat()


def _items_for(name: str, item: dict[str, Any], ctx: _Context) -> list[str]:
    """The sentences an array named ``name`` gets one item each for."""
    if "description" not in item.get("properties", {}) and "title" not in item.get("properties", {}):
        return []
    if name == "events" or "start" in item.get("properties", {}):
        return [s for s in _sentences(ctx.text) if "tomorrow" in s.lower()]
    return [s for s in _sentences(ctx.text) if _CUE_RE.search(s)]


def generate(schema: dict[str, Any], root: dict[str, Any], ctx: _Context, name: str = "") -> Any:
    """A value for ``schema`` made from the conversation (see the module docstring)."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if _resolve(b, root).get("type") != "null"] or schema["anyOf"]
        return generate(branches[0], root, ctx, name)
    if "const" in schema:
        return schema["const"]
    words = re.findall(r"[\w']+", ctx.sentence or ctx.text)
    if "enum" in schema:
        named = [v for v in schema["enum"] if isinstance(v, str) and v.lower() in {w.lower() for w in words}]
        return (named or (["other"] if "other" in schema["enum"] else schema["enum"]))[0]
    kind = schema.get("type")
    if kind == "object":
        return {key: generate(sub, root, ctx, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        item = _resolve(schema.get("items", {}), root)
        sentences = _items_for(name, item, ctx)[: schema.get("maxItems", 20)]
        sentences += [ctx.text] * max(0, schema.get("minItems", 0) - len(sentences))
        return [generate(item, root, _Context(ctx.text, ctx.started_at, s), "") for s in sentences]
    if kind == "boolean":
        return name == "discard" and len(re.findall(r"[\w']+", ctx.text)) < 5
    if kind in ("integer", "number"):
        value = max(schema.get("minimum", 0), min(30, schema.get("maximum", 30)))
        return int(value) if kind == "integer" else float(value)
    if schema.get("format") == "date-time" or name == "start":
        return _event_start(ctx)
    if name == "emoji":
        return "🧠"
    if name == "title":
        return " ".join(w.capitalize() for w in words[:6]) or "Untitled"
    if ctx.sentence is not None:
        return ctx.sentence
    return " ".join(_sentences(ctx.text)[:2])


def embed_text(text: str, dimension: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A unit vector: the text's words hashed into ``dimension`` signed buckets."""
    vector = np.zeros(dimension, dtype=np.float64)
    for word in re.findall(r"\w+", text.lower()) or [text]:  # no words: the text itself is one
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vector[h % dimension] += 1.0 if (h >> 40) & 1 else -1.0
    if not vector.any():  # the words cancelled out
        vector[0] = 1.0
    return (vector / np.linalg.norm(vector)).astype(np.float32)


# --- the fake API ----------------------------------------------------------------------


class FakeOpenAI(FakeHTTPService):
    """The fake API; ``chat_models`` and ``embedding_models`` say which models exist."""

    def __init__(self, api_key: str = OPENAI_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.chat_models = set(CHAT_MODELS)
        self.embedding_models = dict(EMBEDDING_DIMENSIONS)
        self._garbled = 0
        self._serial = 0

    def reset(self) -> None:
        """Also drop the garbled replies not yet served."""
        with self.lock:
            super().reset()
            self._garbled = 0

    def garble_next(self, count: int = 1) -> None:
        """Answer the next ``count`` chat completions with content that is not valid JSON."""
        with self.lock:
            self._garbled += count

    def authorized(self, request: RecordedRequest) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def error_body(self, status: int, message: str) -> Any:
        kind = _ERROR_TYPES.get(status, "server_error")
        code = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def handle(self, request: RecordedRequest) -> Reply:
        if request.method == "GET" and request.path.startswith("/v1/models/"):
            model = request.path.removeprefix("/v1/models/")
            if model not in self.chat_models | self.embedding_models.keys():
                raise HTTPError(404, f"The model '{model}' does not exist")
            return Reply(
                body={"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
            )
        routes = {"/v1/chat/completions": self._chat, "/v1/embeddings": self._embeddings}
        if request.method != "POST" or request.path not in routes:
            raise HTTPError(404, f"Invalid URL ({request.method} {request.path})")
        try:
            body = request.json
        except ValueError as exc:
            raise HTTPError(400, "We could not parse the JSON body of your request.") from exc
        if not isinstance(body, dict):
            raise HTTPError(400, "The body must be a JSON object.")
        return Reply(body=routes[request.path](body))

    def _chat(self, body: dict[str, Any]) -> Any:
        model, messages = body.get("model"), body.get("messages")
        if model not in self.chat_models:
            raise HTTPError(404, f"The model `{model}` does not exist or you do not have access to it.")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "'messages' must be a non-empty array")
        texts = [_content_text(m) for m in messages]
        users = [t for m, t in zip(messages, texts, strict=True) if m.get("role") == "user"]
        found = _ISO_RE.search("\n".join(texts))
        ctx = _Context(users[-1] if users else texts[-1], datetime.fromisoformat(found[0]) if found else None)
        content = self._content(body.get("response_format"), ctx)
        if self._garbled:
            self._garbled -= 1
            content = '{"title": "cut off'
        self._serial += 1
        prompt_tokens = sum(len(t.split()) for t in texts)
        completion_tokens = len(content.split())
        return {
            "id": f"chatcmpl-fake{self._serial:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }

    def _content(self, response_format: Any, ctx: _Context) -> str:
        if response_format is None or response_format.get("type") == "text":
            return f"Noted: {' '.join(ctx.text.split()[:12])}"
        if response_format.get("type") == "json_object":
            return '{"text": ' + _json(ctx.text[:200]) + "}"
        spec = response_format.get("json_schema") or {}
        schema, name = spec.get("schema"), spec.get("name", "")
        if response_format.get("type") != "json_schema" or not isinstance(schema, dict) or not name:
            raise HTTPError(400, "Invalid 'response_format': a json_schema needs a name and a schema.")
        problems = strict_problems(schema, schema) if spec.get("strict") else []
        if schema.get("type") != "object" or "anyOf" in schema:
            problems.insert(0, "the root must be an object, not anyOf or a $ref")
        if problems:
            raise HTTPError(400, f"Invalid schema for response_format '{name}': {problems[0]}.")
        try:
            document = generate(schema, schema, ctx)
            validate(document, schema)
        except SchemaError as exc:
            raise HTTPError(400, f"Invalid schema for response_format '{name}': {exc}.") from exc
        return _json(document)

    def _embeddings(self, body: dict[str, Any]) -> Any:
        model, raw, fmt = body.get("model"), body.get("input"), body.get("encoding_format", "float")
        native = self.embedding_models.get(model) if isinstance(model, str) else None
        if native is None:
            raise HTTPError(404, f"The model `{model}` does not exist or you do not have access to it.")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not 1 <= len(texts) <= 2048:
            raise HTTPError(400, "'$.input' is invalid: give a string or an array of 1 to 2048 strings.")
        if not all(isinstance(t, str) and t for t in texts):
            raise HTTPError(400, "'$.input' is invalid: strings must not be empty.")
        dimension = body.get("dimensions", native)
        if "dimensions" in body and model == "text-embedding-ada-002":
            raise HTTPError(400, "This model does not support specifying dimensions.")
        if not isinstance(dimension, int) or not 1 <= dimension <= native:
            raise HTTPError(400, f"'dimensions' must be between 1 and {native}.")
        if fmt not in ("float", "base64"):
            raise HTTPError(400, "'encoding_format' must be 'float' or 'base64'.")
        data = []
        for i, text in enumerate(texts):
            vector = embed_text(text, dimension)
            encoded = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if fmt == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _content_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI API on a free port, stopped after the test."""
    fake = FakeOpenAI()
    with fake:
        yield fake


@pytest.fixture
async def openai_embedder(openai_fake: FakeOpenAI) -> AsyncIterator[OpenAIEmbedder]:
    """An ``OpenAIEmbedder`` (text-embedding-3-small, 1536 dimensions) on a fresh fake."""
    embedder = OpenAIEmbedder(OPENAI_KEY, base_url=f"{openai_fake.url}/v1", timeout=5, max_retries=1)
    yield embedder
    await embedder.close()


@pytest.fixture
async def openai_llm(openai_fake: FakeOpenAI) -> AsyncIterator[OpenAILanguageModel]:
    """An ``OpenAILanguageModel`` (gpt-4o-mini) on a fresh fake."""
    llm = OpenAILanguageModel(OPENAI_KEY, base_url=f"{openai_fake.url}/v1", timeout=5, max_retries=1)
    yield llm
    await llm.close()

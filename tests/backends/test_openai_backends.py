"""The OpenAI language model and embedder, and the fake API they are proven against.

Everything goes through the real ``openai`` SDK over HTTP to ``tests/fakes/openai_server.py``.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import openai
import pytest

from app.backends.openai_embedder import OpenAIEmbedder
from app.backends.openai_llm import OpenAILanguageModel, _decode_structured, structured_schema
from app.core.errors import BackendUnavailable
from app.core.models import Structured
from app.core.ports import Embedder, LanguageModel
from tests.fakes import openai_server as fakes
from tests.fakes.openai_server import FakeOpenAI, embed_text, strict_problems, validate

openai_fake = fakes.openai_fake
openai_llm = fakes.openai_llm
openai_embedder = fakes.openai_embedder

pytestmark = pytest.mark.anyio

KEY = fakes.OPENAI_KEY
BERLIN = ZoneInfo("Europe/Berlin")
STARTED = datetime(2024, 5, 6, 10, 0, tzinfo=BERLIN)  # a Monday, CEST (+02:00)
MEETING = (
    "Okay so the budget review with Anna is tomorrow at 3pm. "
    "I need to send the work report to Anna before then. "
    "Also remind me to book the flights for the offsite."
)


def sdk(fake: FakeOpenAI, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, base_url=f"{fake.url}/v1", **options)


def chat_bodies(fake: FakeOpenAI) -> list[Any]:
    return [r.json for r in fake.requests_to("/v1/chat/completions")]


# --- the schema ----------------------------------------------------------------------------


def test_schema_is_acceptable_to_strict_mode() -> None:
    schema = structured_schema()
    assert strict_problems(schema, schema) == []
    assert schema["type"] == "object"
    assert set(schema["$defs"]) == {"ActionItem", "Event"}
    assert schema["properties"]["events"]["items"] == {"$ref": "#/$defs/Event"}
    event = schema["$defs"]["Event"]
    assert event["required"] == list(event["properties"]) == ["title", "start", "description", "duration"]
    assert event["properties"]["start"]["format"] == "date-time"
    assert event["properties"]["duration"]["maximum"] == 180
    assert schema["$defs"]["ActionItem"]["required"] == ["description"]  # completed is the app's state
    assert "default" not in json.dumps(schema)
    assert "maxLength" not in json.dumps(schema)


def test_fake_refuses_what_strict_mode_refuses() -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}, "required": []}
    assert len(strict_problems(loose, loose)) == 3


def test_naive_event_starts_take_the_conversations_timezone() -> None:
    reply = {"title": "t", "events": [{"title": "call", "start": "2024-05-07T15:00:00"}]}
    got = _decode_structured(json.dumps(reply), STARTED)
    assert got.events[0].start == datetime(2024, 5, 7, 15, 0, tzinfo=BERLIN)


# --- the language model --------------------------------------------------------------------


async def test_adapters_satisfy_the_ports(
    openai_llm: OpenAILanguageModel, openai_embedder: OpenAIEmbedder
) -> None:
    assert isinstance(openai_llm, LanguageModel)
    assert isinstance(openai_embedder, Embedder)


async def test_structure_through_a_strict_json_schema(
    openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel
) -> None:
    got = await openai_llm.structure(MEETING, STARTED, "en")
    (body,) = chat_bodies(openai_fake)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == structured_schema()  # $defs and $refs reach the API as built
    assert isinstance(got, Structured)
    assert got.title == "Okay So The Budget Review With"
    assert got.category == "work"
    assert [a.description for a in got.action_items] == [
        "I need to send the work report to Anna before then.",
        "Also remind me to book the flights for the offsite.",
    ]
    (event,) = got.events
    assert event.start == datetime(2024, 5, 7, 15, 0, tzinfo=BERLIN)
    assert event.duration == 30
    assert event.created is False


async def test_the_reply_validates_against_the_schema(openai_fake: FakeOpenAI) -> None:
    schema = structured_schema()
    async with sdk(openai_fake) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": f"Started {STARTED.isoformat()}"},
                {"role": "user", "content": MEETING},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "memory", "schema": schema, "strict": True},
            },
        )
    content = completion.choices[0].message.content
    assert content is not None
    validate(json.loads(content), schema)
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_the_prompt_says_when_the_conversation_started(
    openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel
) -> None:
    await openai_llm.structure("We meet next Tuesday at ten.", STARTED, "de")
    system = chat_bodies(openai_fake)[0]["messages"][0]["content"]
    assert "2024-05-06T10:00:00+02:00" in system
    assert "Monday" in system and "CEST" in system
    assert "relative dates" in system
    assert "'de'" in system
    assert chat_bodies(openai_fake)[0]["messages"][1] == {
        "role": "user",
        "content": "We meet next Tuesday at ten.",
    }


async def test_an_invalid_reply_is_asked_for_again(
    openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel
) -> None:
    openai_fake.garble_next(1)
    got = await openai_llm.structure(MEETING, STARTED, None)
    assert got.category == "work"
    assert len(chat_bodies(openai_fake)) == 2


async def test_two_invalid_replies_are_an_error_not_a_discard(
    openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel
) -> None:
    openai_fake.garble_next(2)
    with pytest.raises(BackendUnavailable) as caught:
        await openai_llm.structure(MEETING, STARTED, None)
    assert caught.value.backend == "openai"
    assert len(chat_bodies(openai_fake)) == 2


async def test_discard(openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel) -> None:
    assert await openai_llm.should_discard("Okay, thanks.") is True
    assert await openai_llm.should_discard(MEETING) is False
    asked = chat_bodies(openai_fake)
    assert len(asked) == 2
    assert asked[0]["response_format"]["json_schema"]["schema"]["required"] == ["discard"]
    assert asked[0]["messages"][1]["content"] == "Okay, thanks."
    # Nothing to keep, and over 100 words, are decided without a request.
    assert await openai_llm.should_discard("  ") is True
    assert await openai_llm.should_discard("word " * 101) is False
    assert len(chat_bodies(openai_fake)) == 2


async def test_run_prompt(openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel) -> None:
    answer = await openai_llm.run_prompt("List the people mentioned.", MEETING)
    assert answer is not None and answer.startswith("Noted:")
    (body,) = chat_bodies(openai_fake)
    assert "response_format" not in body
    assert "List the people mentioned." in body["messages"][1]["content"]
    assert MEETING in body["messages"][1]["content"]


async def test_llm_retries_a_429_then_succeeds(
    openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel
) -> None:
    openai_fake.fail_next(1, status=429, retry_after=0.01)
    assert await openai_llm.should_discard("Okay, thanks.") is True
    assert len(chat_bodies(openai_fake)) == 2


async def test_llm_persistent_failure_is_backend_unavailable(
    openai_fake: FakeOpenAI, openai_llm: OpenAILanguageModel
) -> None:
    openai_fake.fail_next(10, status=500, retry_after=0.01)
    with pytest.raises(BackendUnavailable) as caught:
        await openai_llm.structure(MEETING, STARTED, None)
    assert isinstance(caught.value.cause, openai.InternalServerError)
    assert len(chat_bodies(openai_fake)) == 2  # max_retries=1: one try and one retry, then up


async def test_llm_stall_is_backend_unavailable_within_the_timeout(openai_fake: FakeOpenAI) -> None:
    llm = OpenAILanguageModel(KEY, base_url=f"{openai_fake.url}/v1", timeout=0.3, max_retries=0)
    openai_fake.stall_next(3, seconds=30)
    began = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await llm.run_prompt("Summarise.", MEETING)
    finally:
        await llm.close()
    assert time.monotonic() - began < 2.0
    assert isinstance(caught.value.cause, openai.APITimeoutError)


async def test_llm_with_a_refused_key_is_backend_unavailable(openai_fake: FakeOpenAI) -> None:
    llm = OpenAILanguageModel("sk-wrong", base_url=f"{openai_fake.url}/v1", max_retries=0)
    try:
        with pytest.raises(BackendUnavailable, match="AuthenticationError"):
            await llm.should_discard("Okay, thanks.")
    finally:
        await llm.close()


# --- the embedder --------------------------------------------------------------------------


async def test_float_and_base64_embeddings_are_the_same_vectors(openai_fake: FakeOpenAI) -> None:
    texts = ["the quick brown fox", "jumps over the lazy dog"]
    async with sdk(openai_fake) as client:
        floats = await client.embeddings.create(
            input=texts, model="text-embedding-3-small", encoding_format="float"
        )
        raw = await client.embeddings.create(
            input=texts, model="text-embedding-3-small", encoding_format="base64"
        )
        default = await client.embeddings.create(input=texts, model="text-embedding-3-small")
    as_floats = np.array([d.embedding for d in floats.data], dtype=np.float32)
    as_base64 = np.stack([np.frombuffer(base64.b64decode(str(d.embedding)), dtype="<f4") for d in raw.data])
    as_default = np.array([d.embedding for d in default.data], dtype=np.float32)
    assert as_floats.shape == (2, 1536)
    assert np.array_equal(as_floats, as_base64)
    assert np.array_equal(as_floats, as_default)  # the SDK asks for base64 itself and decodes it
    bodies = [r.json for r in openai_fake.requests_to("/v1/embeddings")]
    assert [b.get("encoding_format") for b in bodies] == ["float", "base64", "base64"]
    assert floats.usage.total_tokens == 9  # one per word in the fake


async def test_embeddings_are_unit_rows_in_input_order(
    openai_fake: FakeOpenAI, openai_embedder: OpenAIEmbedder
) -> None:
    texts = ["alpha beta", "gamma", "alpha beta"]
    got = await openai_embedder.embed(texts)
    assert got.dtype == np.float32
    assert got.shape == (3, 1536)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert np.allclose(got[0], embed_text("alpha beta", 1536))
    assert np.array_equal(got[0], got[2])
    assert openai_fake.requests_to("/v1/embeddings")[0].json["encoding_format"] == "base64"


async def test_batching(openai_fake: FakeOpenAI, openai_embedder: OpenAIEmbedder) -> None:
    texts = [f"text number {i}" for i in range(600)]
    got = await openai_embedder.embed(texts)
    sizes = [len(r.json["input"]) for r in openai_fake.requests_to("/v1/embeddings")]
    assert sizes == [256, 256, 88]
    assert np.allclose(got[599], embed_text("text number 599", 1536))


async def test_empty_inputs(openai_fake: FakeOpenAI, openai_embedder: OpenAIEmbedder) -> None:
    assert (await openai_embedder.embed([])).shape == (0, 1536)
    assert openai_fake.requests == []
    got = await openai_embedder.embed([""])  # the API refuses "", so a space is sent
    assert got.shape == (1, 1536)
    assert openai_fake.requests_to("/v1/embeddings")[0].json["input"] == [" "]


async def test_dimension_from_the_model_or_dimensions(openai_fake: FakeOpenAI) -> None:
    url = f"{openai_fake.url}/v1"
    large = OpenAIEmbedder(KEY, base_url=url, model="text-embedding-3-large")
    short = OpenAIEmbedder(KEY, base_url=url, dimensions=256)
    try:
        assert large.dimension == 3072
        assert short.dimension == 256
        got = await short.embed(["one two three"])
        assert got.shape == (1, 256)
        assert np.isclose(np.linalg.norm(got[0]), 1.0)
        assert openai_fake.requests_to("/v1/embeddings")[0].json["dimensions"] == 256
    finally:
        await large.close()
        await short.close()


async def test_dimension_of_an_unknown_model_is_probed(openai_fake: FakeOpenAI) -> None:
    openai_fake.embedding_models["local-embedder"] = 48
    embedder = OpenAIEmbedder(KEY, base_url=f"{openai_fake.url}/v1", model="local-embedder")
    try:
        with pytest.raises(RuntimeError, match="probe"):
            _ = embedder.dimension
        assert await embedder.probe() == 48
        assert embedder.dimension == 48
        assert await embedder.probe() == 48
        assert len(openai_fake.requests) == 1
    finally:
        await embedder.close()


async def test_embedder_retries_a_429_then_succeeds(
    openai_fake: FakeOpenAI, openai_embedder: OpenAIEmbedder
) -> None:
    openai_fake.fail_next(1, status=429, retry_after=0.01)
    assert (await openai_embedder.embed(["hello"])).shape == (1, 1536)
    assert len(openai_fake.requests) == 2


async def test_embedder_persistent_failure_is_backend_unavailable(
    openai_fake: FakeOpenAI, openai_embedder: OpenAIEmbedder
) -> None:
    openai_fake.fail_next(10, status=503, retry_after=0.01)
    with pytest.raises(BackendUnavailable) as caught:
        await openai_embedder.embed(["hello"])
    assert caught.value.backend == "openai"
    assert len(openai_fake.requests) == 2


async def test_unknown_model_is_backend_unavailable(openai_fake: FakeOpenAI) -> None:
    embedder = OpenAIEmbedder(
        KEY, base_url=f"{openai_fake.url}/v1", model="text-embedding-4-nope", dimensions=8
    )
    try:
        with pytest.raises(BackendUnavailable, match="NotFoundError"):
            await embedder.embed(["hello"])
    finally:
        await embedder.close()


# --- the fake's other routes ---------------------------------------------------------------


async def test_fake_models_route_and_auth(openai_fake: FakeOpenAI) -> None:
    async with sdk(openai_fake) as client:
        model = await client.models.retrieve("text-embedding-3-small")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-0")
    assert (model.id, model.object, model.owned_by) == ("text-embedding-3-small", "model", "openai")
    async with openai.AsyncOpenAI(
        api_key="sk-wrong", base_url=f"{openai_fake.url}/v1", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.retrieve("gpt-4o-mini")
    assert openai_fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_fake_refuses_a_loose_schema_in_strict_mode(openai_fake: FakeOpenAI) -> None:
    loose: dict[str, object] = {"type": "object", "properties": {"a": {"type": "string"}}}
    async with sdk(openai_fake, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError, match="additionalProperties"):
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": loose, "strict": True},
                },
            )


async def test_fake_fills_nullable_and_nested_schemas(openai_fake: FakeOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "minItems": 1},
            "mood": {"type": "string", "enum": ["calm", "tense"]},
        },
        "required": ["note", "people", "mood"],
        "additionalProperties": False,
        "$defs": {
            "Person": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 40}},
                "required": ["name", "age"],
                "additionalProperties": False,
            }
        },
    }
    async with sdk(openai_fake) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "It was tense."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": True},
            },
        )
    document = json.loads(completion.choices[0].message.content or "")
    validate(document, schema)
    assert document["mood"] == "tense"
    assert document["people"][0]["age"] == 40


async def test_plain_chat_is_a_short_text(openai_fake: FakeOpenAI) -> None:
    async with sdk(openai_fake) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}]
        )
    assert completion.choices[0].message.content == "Noted: Hello there"
    assert completion.choices[0].message.role == "assistant"
    assert completion.id.startswith("chatcmpl-")


def test_embed_text_is_deterministic_and_unit() -> None:
    a, b = embed_text("Hello, world", 64), embed_text("hello world", 64)
    assert np.array_equal(a, b)
    assert np.isclose(np.linalg.norm(a), 1.0)
    assert not np.array_equal(a, embed_text("goodbye world", 64))
    assert np.isclose(np.linalg.norm(embed_text(" ", 8)), 1.0)
    assert embed_text("x", 1536).dtype == np.float32

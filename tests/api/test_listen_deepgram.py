"""``/listen`` on the production engine: Deepgram live through its SDK, against the fake server.

The fake Deepgram (``tests/fakes/deepgram_server.py``) recognises with the embedded Whisper
engine, so its results are real speech recognition; the app reaches it through
``OMI_STT=deepgram``, ``DEEPGRAM_API_KEY`` and ``OMI_DEEPGRAM_URL``, as a deployment would.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from app.adapters import build_speech_to_text
from app.backends.deepgram_stt import DeepgramSpeechToText
from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from tests.api.conftest import WHISPER, Api
from tests.api.listen_support import (
    CORPUS,
    Listener,
    clip,
    encode,
    listen_app,
    listen_query,
    memory_text,
    silence,
    token,
    wait_for_memories,
)
from tests.fakes.deepgram_server import FakeDeepgram
from tests.wer import wer

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def deepgram_app(tmp_path: Path, embedder: MiniLMEmbedder) -> AsyncIterator[tuple[Api, FakeDeepgram]]:
    async with FakeDeepgram(WHISPER) as fake:
        options: dict[str, Any] = {
            "stt": "deepgram",
            "deepgram_api_key": "test-key",
            "deepgram_url": fake.url,
        }
        engine = build_speech_to_text(Settings(**options))
        assert isinstance(engine, DeepgramSpeechToText)
        # Deepgram answers CloseStream within a second; the fake recognises with one Whisper
        # worker shared by every concurrent session, so its last results may take longer.
        engine.finish_timeout = 60.0
        async with listen_app(tmp_path, embedder, engine, **options) as api:
            yield api, fake


def assert_no_overlap(segments: list[dict[str, Any]]) -> None:
    """Every segment after the one before it: nothing said twice, in order."""
    for before, after in itertools.pairwise(segments):
        assert after["start"] >= before["end"] - 0.01, (before, after)


async def stream(api: Api, uid: str, name: str) -> dict[str, Any]:
    headers = await token(api, uid)
    frames, _ = encode(clip(name) + silence(1.0), "pcm16")
    with await api.client.websocket_connect("/listen", params=listen_query("pcm16"), headers=headers) as ws:
        listener = Listener(ws)
        await listener.send(frames)
        await listener.until(lambda got: bool(got.segments), within=120)
    (memory,) = await wait_for_memories(api, headers, within=120)
    shown = listener.text.split()
    assert memory_text(memory).split()[: len(shown)] == shown
    return memory


@pytest.mark.slow
async def test_every_clip_through_deepgram_becomes_a_memory(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    async with deepgram_app(tmp_path, embedder) as (api, fake):
        found: dict[str, dict[str, Any]] = {}

        async def one(name: str) -> None:
            found[name] = await stream(api, f"user-{name}", name)

        async with anyio.create_task_group() as group:
            for name in CORPUS:
                group.start_soon(one, name)
        assert len(fake.connections) == len(CORPUS)
        query = fake.connections[0].query
        assert query["diarize"] == query["punctuate"] == query["smart_format"] == "true"
        assert query["encoding"] == "linear16" and query["sample_rate"] == "16000"
    for name, memory in found.items():
        error = wer(CORPUS[name]["text"], memory_text(memory))
        print(f"deepgram {name}: WER {error:.3f}")
        assert error <= 0.25, (name, memory_text(memory))
        assert_no_overlap(memory["transcript_segments"])


@pytest.mark.slow
async def test_a_dropped_deepgram_connection_loses_and_repeats_nothing(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    async with deepgram_app(tmp_path, embedder) as (api, fake):
        fake.drop_after(12.0)  # in the middle of the standup's third sentence
        memory = await stream(api, "alice", "standup")
        assert len(fake.connections) == 2 and fake.connections[0].dropped
    error = wer(CORPUS["standup"]["text"], memory_text(memory))
    print(f"deepgram standup with a drop at 12 s: WER {error:.3f}")
    assert error <= 0.25, memory_text(memory)
    assert_no_overlap(memory["transcript_segments"])
    assert memory["transcript_segments"][-1]["end"] <= CORPUS["standup"]["duration_s"] + 1.0

"""Live sessions driven directly, with a scripted engine whose words and times are exact.

:class:`~tests.fakes.level_engine.LevelEngine` hears 0.5 s chunks of constant level ``256 * k``
as the word ``w<k>`` spoken over that half second (``w50`` and up by ``SPEAKER_1``, a diarising
engine like Deepgram); a silent chunk or the end of the stream ends a final result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from app.core.journal import OPEN_KEY, ProcessingMemories
from app.core.listen import ListenConfig, ListenParams, ListenSession
from app.core.listen_manager import ListenManager
from app.core.models import Memory, PluginResult, TranscriptSegment
from app.core.pipeline import Announced, MemoryPipeline
from app.core.ports import MemoryQuery
from app.core.services import Services
from app.core.speech_profile import save_profile
from tests.api.conftest import embedded_services
from tests.fakes.level_engine import RATE, LevelEngine
from tests.fakes.level_engine import tone as audio

pytestmark = pytest.mark.anyio


async def feed(session: ListenSession, pcm: bytes) -> None:
    """Send ``pcm`` in 100 ms frames."""
    for start in range(0, len(pcm), RATE // 5):
        await session.feed(pcm[start : start + RATE // 5])


class NoPlugins:
    async def on_memory_processing(self, uid: str, memory: Memory) -> list[PluginResult]:
        return []

    async def announce(self, uid: str, memory: Memory, only: Collection[str] | None = None) -> Announced:
        return Announced(messages=[])


class Sink:
    """Records what the client would get; checks each result is journalled before it is sent."""

    def __init__(self, journals: ProcessingMemories) -> None:
        self.journals = journals
        self.messages: list[Any] = []
        self.arrived = asyncio.Event()

    async def send_text(self, text: str) -> None:
        message = msgspec.json.decode(text)
        if isinstance(message, list):
            opened = await self.journals.kv.hgetall(OPEN_KEY)
            assert opened, "segments sent with no open journal"
            kept = []
            for pm_id, raw in opened.items():
                uid = msgspec.json.decode(raw)["uid"]
                kept += await self.journals.kv.items(f"listen:journal:{uid}:{pm_id}")
            assert any(msgspec.json.decode(batch) == message for batch in kept), "sent before journalled"
        self.messages.append(message)
        self.arrived.set()

    @property
    def segments(self) -> list[dict[str, Any]]:
        return [s for m in self.messages if isinstance(m, list) for s in m]

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.segments) < count:
                self.arrived.clear()
                await self.arrived.wait()


_MANAGERS: list[ListenManager] = []


@pytest.fixture
async def services(tmp_path: Path, embedder: MiniLMEmbedder) -> AsyncIterator[Services]:
    services = embedded_services(tmp_path, embedder, LevelEngine(two_speakers=True, sample_rate=RATE))
    yield services
    while _MANAGERS:
        await _MANAGERS.pop().close()
    await services.close()


def manager(
    services: Services, **config: Any
) -> tuple[ListenManager, list[tuple[str, str, list[TranscriptSegment]]]]:
    """A manager on ``services`` whose ``on_transcript`` records its calls and never returns."""
    calls: list[tuple[str, str, list[TranscriptSegment]]] = []

    async def on_transcript(session_id: str, uid: str, segments: list[TranscriptSegment]) -> None:
        calls.append((session_id, uid, segments))
        await asyncio.sleep(3600)  # a plugin that never returns must not hold the session up

    pipeline = MemoryPipeline(services, NoPlugins())
    listen = ListenManager(services.stt, pipeline, on_transcript, ListenConfig(**config))
    _MANAGERS.append(listen)
    return listen, calls


PCM16 = ListenParams(codec="pcm16", sample_rate=RATE)


async def test_each_result_is_journalled_sent_and_dispatched_and_becomes_one_memory(
    services: Services,
) -> None:
    listen, calls = manager(services)
    sink = Sink(listen.journals)
    session = await listen.open("alice", PCM16, sink)
    await feed(session, audio(3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 5))  # w5 4 s later: not merged
    await sink.wait(2)
    assert sink.messages[0] == [
        {
            "text": "w3",
            "speaker": "SPEAKER_0",
            "speaker_id": 0,
            "is_user": False,
            "person_id": None,
            "start": 0.0,
            "end": 0.5,
        },
        {
            "text": "w4",
            "speaker": "SPEAKER_0",
            "speaker_id": 0,
            "is_user": False,
            "person_id": None,
            "start": 0.5,
            "end": 1.0,
        },
    ]
    await asyncio.sleep(0)
    assert [(uid, [s.text for s in segments]) for _, uid, segments in calls] == [("alice", ["w3", "w4"])]
    assert calls[0][0] == session.id
    await listen.end(session)  # the last word comes with the end of the stream
    (memory,) = await services.store.list("alice", MemoryQuery())
    assert [(s.text, s.start, s.end) for s in memory.transcript_segments] == [
        ("w3 w4", 0.0, 1.0),
        ("w5", 5.0, 5.5),
    ]
    assert await services.kv.hgetall(OPEN_KEY) == {}
    assert await services.kv.keys("listen:journal:") == []


async def test_open_journals_are_finished_on_the_next_start_exactly_once(services: Services) -> None:
    listen, _ = manager(services)
    sink = Sink(listen.journals)
    session = await listen.open("alice", PCM16, sink)
    await feed(session, audio(7, 0, 8, 0))
    await sink.wait(2)
    # the server dies here: no end(), the journal stays open
    assert len(await services.kv.hgetall(OPEN_KEY)) == 1
    restarted, _ = manager(services)
    assert await restarted.recover() == 1
    (memory,) = await services.store.list("alice", MemoryQuery())
    assert [s.text for s in memory.transcript_segments] == ["w7 w8"]
    assert await services.kv.hgetall(OPEN_KEY) == {}
    assert await restarted.recover() == 0
    assert len(await services.store.list("alice", MemoryQuery())) == 1


async def test_the_profile_speaker_is_the_user_and_times_start_after_the_profile(services: Services) -> None:
    profile = audio(60, 61, 62, 0) + bytes(RATE * 2 * 4)  # 2 s said by SPEAKER_1, then 4 s of silence
    await save_profile(services.blobs, services.kv, "alice", profile, 6.0)
    listen, _ = manager(services)
    sink = Sink(listen.journals)
    session = await listen.open("alice", PCM16, sink)
    await feed(session, audio(10, 55, 0))
    await sink.wait(2)
    assert [(s["text"], s["speaker"], s["is_user"], s["start"]) for s in sink.segments] == [
        ("w10", "SPEAKER_0", False, 0.0),
        ("w55", "SPEAKER_1", True, 0.5),
    ]
    await listen.end(session)
    # without include_speech_profile nobody is the user and the profile is not heard
    await save_profile(services.blobs, services.kv, "carol", profile, 6.0)
    sink = Sink(listen.journals)
    session = await listen.open("carol", msgspec.structs.replace(PCM16, include_speech_profile=False), sink)
    await feed(session, audio(10, 55, 0))
    await sink.wait(2)
    assert [(s["text"], s["is_user"], s["start"]) for s in sink.segments] == [
        ("w10", False, 0.0),
        ("w55", False, 0.5),
    ]
    await listen.end(session)


async def test_a_resumed_session_continues_the_timeline_and_the_memory(services: Services) -> None:
    listen, _ = manager(services)
    sink = Sink(listen.journals)
    session = await listen.open("alice", PCM16, sink)
    await feed(session, audio(3, 0, 0, 0))  # 2 s
    await listen.end(session)
    (first,) = await services.store.list("alice", MemoryQuery())
    sink = Sink(listen.journals)
    session = await listen.open("alice", PCM16, sink)
    await feed(session, audio(4, 0))
    await sink.wait(1)
    assert sink.segments[0]["start"] == 2.0  # after the 2 s of the first connection
    await listen.end(session)
    (memory,) = await services.store.list("alice", MemoryQuery())
    assert memory.id == first.id
    assert [(s.text, s.start, s.end) for s in memory.transcript_segments] == [("w3 w4", 0.0, 2.5)]
    # another user never gets alice's offer
    sink = Sink(listen.journals)
    session = await listen.open("bob", PCM16, sink)
    await feed(session, audio(5, 0))
    await sink.wait(1)
    assert sink.segments[0]["start"] == 0.0
    await listen.end(session)
    assert [s.text for s in (await services.store.list("bob", MemoryQuery()))[0].transcript_segments] == [
        "w5"
    ]


async def test_the_silence_timer_makes_the_memory_and_the_next_words_start_another(
    services: Services,
) -> None:
    listen, _ = manager(services, silence_seconds=0.3)
    sink = Sink(listen.journals)
    session = await listen.open("alice", msgspec.structs.replace(PCM16, new_memory_watch=True), sink)
    await feed(session, audio(3, 0))
    await sink.wait(1)
    async with asyncio.timeout(5):
        while not any(isinstance(m, dict) and m["type"] == "new_memory_created" for m in sink.messages):
            sink.arrived.clear()
            await sink.arrived.wait()
    await feed(session, audio(4, 0))
    await sink.wait(2)
    await listen.end(session)
    kinds = [m["type"] if isinstance(m, dict) else "segments" for m in sink.messages]
    assert kinds == [
        "new_processing_memory_created",
        "segments",
        "new_memory_creating",
        "new_memory_created",
        "new_processing_memory_created",
        "segments",
    ]
    assert sink.messages[0]["processing_memory_id"] != sink.messages[4]["processing_memory_id"]
    second, first = await services.store.list("alice", MemoryQuery())
    assert [s.text for s in first.transcript_segments] == ["w3"]
    assert [(s.text, s.start) for s in second.transcript_segments] == [("w4", 0.0)]  # from its own start
    assert second.started_at > first.started_at

"""The Deepgram live adapter, driven through the real SDK against the fake Deepgram server.

The fake recognises audio with :class:`~tests.fakes.level_engine.LevelEngine`, a deterministic
recogniser: every 0.5 s of audio at the constant level ``256 * k`` reads as the word ``w<k>``
spoken over exactly that half second (``w50`` and up by ``SPEAKER_1``), a silent chunk or three
pending words ending a result, so the words and times each test expects are known to the
millisecond.
"""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.listen.v1.types import ListenV1Results, ListenV1ResultsChannelAlternativesItemWordsItem
from websockets.exceptions import ConnectionClosedError

from app.backends.deepgram_stt import DeepgramSpeechToText, DeepgramStream, words_to_segments
from app.core.errors import BackendUnavailable
from app.core.models import TranscriptSegment
from app.core.ports import SpeechToText
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.level_engine import RATE, LevelEngine
from tests.fakes.level_engine import tone as clip
from tests.wer import wer

pytestmark = pytest.mark.anyio


class Collector:
    def __init__(self) -> None:
        self.segments: list[TranscriptSegment] = []
        self.arrived = anyio.Event()

    async def __call__(self, segments: list[TranscriptSegment]) -> None:
        self.segments.extend(segments)
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        """Wait until at least ``count`` segments have arrived."""
        while len(self.segments) < count:
            await self.arrived.wait()
            self.arrived = anyio.Event()

    def words(self) -> list[str]:
        return [word for segment in self.segments for word in segment.text.split()]


def assert_exact(collector: Collector, levels: tuple[int, ...]) -> None:
    """Every word once, in order, and each segment's times those of its first and last word."""
    expected = [(f"w{k}", i * 0.5, i * 0.5 + 0.5) for i, k in enumerate(levels) if k]
    assert collector.words() == [w for w, _, _ in expected]
    position = 0
    for segment in collector.segments:
        count = len(segment.text.split())
        first, last = expected[position], expected[position + count - 1]
        assert (segment.start, segment.end) == pytest.approx((first[1], last[2]), abs=1e-6)
        position += count
    starts = [s.start for s in collector.segments]
    assert starts == sorted(starts)


@pytest.fixture
async def server() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(LevelEngine(batch=3, two_speakers=True)) as fake:
        yield fake


async def open_stream(
    server: FakeDeepgram, collector: Collector, **options: Any
) -> tuple[DeepgramSpeechToText, DeepgramStream]:
    engine = DeepgramSpeechToText("test-key", server.environment, retry_backoff=0.01, **options)
    stream = await engine.open(language="en", sample_rate=RATE, on_segments=collector)
    return engine, stream


async def send_until_failure(stream: DeepgramStream) -> BackendUnavailable:
    while True:
        try:
            await stream.send(clip(1))
        except BackendUnavailable as exc:
            return exc
        await anyio.sleep(0.02)


async def send_paced(
    stream: DeepgramStream, audio: bytes, frame: int = RATE // 5, pause: float = 0.005
) -> None:
    for i in range(0, len(audio), frame):
        await stream.send(audio[i : i + frame])
        await anyio.sleep(pause)


def test_the_adapter_satisfies_the_port() -> None:
    engine = DeepgramSpeechToText("key")
    assert isinstance(engine, SpeechToText)
    assert engine.keepalive_interval == 5.0


async def test_options_are_sent_as_the_contract_says(server: FakeDeepgram) -> None:
    engine, stream = await open_stream(server, Collector())
    await stream.finish()
    await engine.close()
    record = server.connections[0]
    assert record.query == {
        "model": "nova-3",
        "language": "en",
        "encoding": "linear16",
        "sample_rate": "16000",
        "channels": "1",
        "punctuate": "true",
        "smart_format": "true",
        "diarize": "true",
        "interim_results": "false",
        "endpointing": "100",
        "no_delay": "true",
    }
    assert record.headers["authorization"] == "Token test-key"


def test_words_group_by_speaker_with_offset() -> None:
    word = ListenV1ResultsChannelAlternativesItemWordsItem
    words = [
        word(word="hello", punctuated_word="Hello", start=0.1, end=0.4, confidence=0.9, speaker=0),
        word(word="there", punctuated_word="there.", start=0.4, end=0.8, confidence=0.9, speaker=0),
        word(word="hi", punctuated_word="Hi!", start=1.0, end=1.2, confidence=0.9, speaker=1),
        word(word="bye", start=1.5, end=1.9, confidence=0.9),
    ]
    segments = words_to_segments(words, offset=10.0)
    assert [(s.text, s.speaker, s.start, s.end) for s in segments] == [
        ("Hello there.", "SPEAKER_0", 10.1, 10.8),
        ("Hi!", "SPEAKER_1", 11.0, 11.2),
        ("bye", "SPEAKER_0", 11.5, 11.9),
    ]


async def test_final_results_become_segments(server: FakeDeepgram) -> None:
    levels = (3, 4, 0, 60, 61, 0, 5)
    collector = Collector()
    engine, stream = await open_stream(server, collector)
    await send_paced(stream, clip(*levels))
    await stream.finish()
    await engine.close()
    assert_exact(collector, levels)
    assert [(s.text, s.speaker) for s in collector.segments] == [
        ("w3 w4", "SPEAKER_0"),
        ("w60 w61", "SPEAKER_1"),
        ("w5", "SPEAKER_0"),
    ]


async def test_close_stream_delivers_the_rest_then_metadata(server: FakeDeepgram) -> None:
    collector = Collector()
    engine, stream = await open_stream(server, collector)
    await stream.send(clip(7, 0, 8, 9))  # w8 and w9 stay in the engine until CloseStream
    with anyio.fail_after(5):
        await collector.wait_for(1)
    assert collector.words() == ["w7"]
    await stream.finish()
    await engine.close()
    assert collector.words() == ["w7", "w8", "w9"]
    record = server.connections[0]
    assert record.messages == ["CloseStream"]
    assert [m["type"] for m in record.sent] == ["Results", "Results", "Metadata"]
    assert record.close_code == 1000
    assert stream.metadata is not None
    assert stream.metadata.request_id == record.request_id
    assert stream.metadata.duration == pytest.approx(2.0)
    with pytest.raises(BackendUnavailable):
        await stream.send(clip(1))


async def test_keepalive_after_silence_keeps_the_connection(server: FakeDeepgram) -> None:
    server.idle_timeout = 0.5
    collector = Collector()
    engine, stream = await open_stream(server, collector, keepalive_interval=0.1)
    await stream.send(clip(2))
    await anyio.sleep(1.2)  # well past the server's idle timeout
    await stream.send(clip(3))
    await stream.finish()
    await engine.close()
    record = server.connections[0]
    assert len(server.connections) == 1
    assert record.messages.count("KeepAlive") >= 3
    assert record.messages[-1] == "CloseStream"
    assert record.close_code == 1000
    assert collector.words() == ["w2", "w3"]


@pytest.mark.parametrize("paced", [True, False], ids=["mid-stream", "during-finish"])
async def test_a_dropped_connection_is_resumed_without_gap_or_duplicate(
    server: FakeDeepgram, paced: bool
) -> None:
    levels = (1, 2, 3, 0, 4, 5, 6, 7, 0, 0, 8, 9, 10, 11, 12, 0, 13, 14)
    audio = clip(*levels)
    collector = Collector()
    engine, stream = await open_stream(server, collector)
    if paced:  # a result comes back before the drop: the replay starts after it
        await send_paced(stream, audio[: 6 * RATE])
        with anyio.fail_after(5):
            await collector.wait_for(1)
        server.drop_after(5.3)
        await send_paced(stream, audio[6 * RATE :])
    else:
        server.drop_after(5.3)
        await stream.send(audio)
    with anyio.fail_after(10):
        await stream.finish()
    await engine.close()
    assert_exact(collector, levels)
    first, second = server.connections
    assert first.dropped
    assert not second.dropped
    assert second.messages[-1] == "CloseStream"
    assert first.audio_bytes + second.audio_bytes >= len(audio)
    if paced:  # only the unacknowledged audio was replayed
        assert second.audio_bytes < len(audio)
    assert stream.connections == 2


async def test_reconnects_are_bounded_then_send_fails(server: FakeDeepgram) -> None:
    collector = Collector()
    engine, stream = await open_stream(server, collector, max_retries=2)
    server.refuse_status = 503
    server.drop_after(0.5)
    with anyio.fail_after(5):
        failure = await send_until_failure(stream)
    assert "3 consecutive connection failures" in str(failure)
    assert "HTTP 503" in str(failure)
    assert server.rejected == [503, 503]  # the drop, then two refused reconnects
    with pytest.raises(BackendUnavailable):
        await stream.finish()
    await engine.close()


async def test_a_wrong_key_is_a_clear_error(server: FakeDeepgram) -> None:
    engine = DeepgramSpeechToText("wrong-key", server.environment, retry_backoff=0.01)
    with pytest.raises(BackendUnavailable, match=r"refused the connection \(HTTP 401"):
        await engine.open(language="en", sample_rate=RATE, on_segments=Collector())
    await engine.close()
    assert server.rejected == [401]  # not retried
    assert server.connections == []


async def test_finish_does_not_wait_forever_for_a_silent_server(server: FakeDeepgram) -> None:
    server.hang = True
    engine, stream = await open_stream(server, Collector(), finish_timeout=0.3)
    await stream.send(clip(1, 2))
    with anyio.fail_after(5), pytest.raises(BackendUnavailable, match=r"within 0\.3 s of CloseStream"):
        await stream.finish()
    await engine.close()
    assert server.connections[0].messages == ["CloseStream"]


async def test_close_aborts_at_once(server: FakeDeepgram) -> None:
    collector = Collector()
    engine, stream = await open_stream(server, collector)
    await stream.send(clip(1, 2))  # still in the engine: never delivered
    with anyio.fail_after(2):
        await stream.close()
        await engine.close()
    assert collector.segments == []
    assert "CloseStream" not in server.connections[0].messages


# -- the fake itself, through the raw SDK -------------------------------------------------------


@pytest.fixture
async def sdk(server: FakeDeepgram) -> AsyncIterator[AsyncDeepgramClient]:
    async with httpx.AsyncClient() as http:
        yield AsyncDeepgramClient(api_key="test-key", environment=server.environment, httpx_client=http)


async def test_fake_closes_an_idle_socket_with_net_0001(
    server: FakeDeepgram, sdk: AsyncDeepgramClient
) -> None:
    server.idle_timeout = 0.2
    async with sdk.listen.v1.connect(model="nova-3") as socket:
        with anyio.fail_after(3):
            with pytest.raises(ConnectionClosedError) as closed:
                await socket.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "NET-0001")
    assert server.connections[0].close_code == 1011


async def test_fake_answers_finalize_with_results_in_the_documented_shape(
    server: FakeDeepgram, sdk: AsyncDeepgramClient
) -> None:
    async with sdk.listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=RATE, diarize="true", punctuate="true"
    ) as socket:
        await socket.send_media(clip(60, 61))
        await socket.send_finalize()
        with anyio.fail_after(3):
            message = await socket.recv()
        await socket.send_close_stream()
        with anyio.fail_after(3):
            rest = await socket.recv()
    assert isinstance(message, ListenV1Results)
    assert (message.is_final, message.speech_final, message.from_finalize) == (True, True, True)
    assert (message.start, message.duration, message.channel_index) == (0.0, 1.0, [0, 1])
    alternative = message.channel.alternatives[0]
    assert alternative.transcript == "w60 w61"
    assert [(w.word, w.punctuated_word, w.start, w.end, w.speaker) for w in alternative.words] == [
        ("w60", "w60", 0.0, 0.5, 1),
        ("w61", "w61", 0.5, 1.0, 1),
    ]
    assert message.metadata.model_info.name
    assert message.metadata.request_id == server.connections[0].request_id
    assert type(rest).__name__ == "ListenV1Metadata"  # everything was final already
    assert server.connections[0].messages == ["Finalize", "CloseStream"]


# -- the real embedded recogniser behind the fake: the corpus, end to end ----------------------

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "audio"


def corpus_clip(name: str) -> tuple[bytes, str, float]:
    """The clip's PCM, its reference text and its duration."""
    reference = json.loads((CORPUS / "corpus.json").read_text())[name]
    with wave.open(str(CORPUS / reference["file"])) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        return wav.readframes(wav.getnframes()), reference["text"], reference["duration_s"]


@pytest.fixture(scope="module")
def whisper() -> Iterator[SpeechToText]:
    whisper_stt = pytest.importorskip("app.backends.whisper_stt")
    if not CORPUS.is_dir():
        pytest.skip(f"the speech corpus is not at {CORPUS}")
    engine = whisper_stt.WhisperSpeechToText()
    yield engine
    asyncio.run(engine.close())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "drop"),
    [("doctor", False), ("travel", False), ("short", False), ("doctor", True), ("grocery", True)],
    ids=["doctor", "travel", "short", "doctor-dropped", "grocery-dropped"],
)
async def test_corpus_through_whisper_behind_the_fake(whisper: SpeechToText, name: str, drop: bool) -> None:
    audio, reference, duration = corpus_clip(name)
    collector = Collector()
    cut = int(len(audio) * 0.6) // 2 * 2 if drop else 0
    async with FakeDeepgram(whisper) as server:
        engine, stream = await open_stream(server, collector, finish_timeout=60.0)
        if drop:  # let a result through first, so the replay starts after acknowledged audio
            await send_paced(stream, audio[:cut], frame=RATE // 5 * 2, pause=0.02)
            with anyio.fail_after(30):
                await collector.wait_for(1)
            server.drop_after(duration * 0.8)
        await send_paced(stream, audio[cut:], frame=RATE // 5 * 2, pause=0.02)  # 10x real time
        await stream.finish()
        await engine.close()
    assert [c.dropped for c in server.connections] == ([True, False] if drop else [False])
    if drop:  # only the unacknowledged audio was replayed
        assert server.connections[1].audio_bytes < len(audio)
    transcript = " ".join(s.text for s in collector.segments)
    assert wer(reference, transcript) <= 0.25, transcript
    starts = [s.start for s in collector.segments]
    assert starts == sorted(starts)
    assert all(s.start <= s.end <= duration + 0.5 for s in collector.segments)

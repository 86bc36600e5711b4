"""The embedded speech-to-text engine: utterance cutting, and Whisper tiny.en on the corpus."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import av
import numpy as np
import pytest

from app.backends.whisper_stt import (
    SpeechStreamError,
    WhisperSpeechToText,
    clean_text,
    is_confident,
    model_path,
)
from app.core.audio import read_wav
from app.core.models import TranscriptSegment
from app.core.ports import SpeechToText
from tests.wer import wer

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
CORPUS: dict[str, dict[str, object]] = json.loads((AUDIO / "corpus.json").read_text())
RATE = 16_000


def _clip(name: str) -> bytes:
    pcm, rate, _ = read_wav((AUDIO / f"{name}.wav").read_bytes())
    assert rate == RATE
    return pcm


class Collector:
    """An ``on_segments`` callback that records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[TranscriptSegment]] = []
        self.arrived = anyio.Event()

    async def __call__(self, segments: list[TranscriptSegment]) -> None:
        self.batches.append(segments)
        self.arrived.set()

    @property
    def segments(self) -> list[TranscriptSegment]:
        return [s for batch in self.batches for s in batch]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


async def _stream(
    engine: WhisperSpeechToText, pcm: bytes, collector: Collector, chunk_s: float = 0.1
) -> None:
    stream = await engine.open(language="en", sample_rate=RATE, on_segments=collector)
    step = int(RATE * chunk_s) * 2
    for offset in range(0, len(pcm), step):
        await stream.send(pcm[offset : offset + step])
        await anyio.lowlevel.checkpoint()
    await stream.finish()
    await stream.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperSpeechToText]:
    engine = WhisperSpeechToText(workers=1, cpu_threads=2)
    yield engine
    asyncio.run(engine.close())


def test_non_speech_text_and_doubtful_segments_are_dropped() -> None:
    assert clean_text(" [BLANK_AUDIO] ") == ""
    assert clean_text("(music) ♪♪") == ""
    assert clean_text(" ... ") == ""
    assert clean_text("*coughs* Hello (laughs) there.") == "Hello there."
    assert is_confident(-0.3, 0.2, 1.4)
    assert not is_confident(-1.2, 0.7, 1.4)
    assert not is_confident(-2.0, 0.0, 1.4)
    assert not is_confident(-0.2, 0.0, 3.1)


def test_model_ships_in_a_package() -> None:
    assert (model_path() / "model.bin").is_file()
    assert isinstance(WhisperSpeechToText(), SpeechToText)


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_corpus_clip(engine: WhisperSpeechToText, name: str) -> None:
    collector = Collector()
    await _stream(engine, _clip(name), collector)

    reference = str(CORPUS[name]["text"])
    assert wer(reference, collector.text) <= 0.25, collector.text
    duration = float(str(CORPUS[name]["duration_s"]))
    segments = collector.segments
    assert segments
    assert all(s.speaker == "SPEAKER_0" and s.speaker_id == 0 and not s.is_user for s in segments)
    assert all(0 <= s.start <= s.end <= duration + 0.1 for s in segments)
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments))


@pytest.mark.anyio
async def test_close_mid_stream_drops_later_results(engine: WhisperSpeechToText) -> None:
    collector = Collector()
    stream = await engine.open(language="en", sample_rate=RATE, on_segments=collector)
    await stream.send(_clip("standup")[: 17 * RATE * 2])  # three utterances
    with anyio.fail_after(30):
        await collector.arrived.wait()
    with anyio.fail_after(2):
        await stream.close()
    delivered = len(collector.batches)
    await anyio.sleep(1.5)
    assert len(collector.batches) == delivered < 3
    with pytest.raises(SpeechStreamError):
        await stream.send(b"\x00\x00")


@pytest.mark.anyio
async def test_close_from_the_callback(engine: WhisperSpeechToText) -> None:
    batches: list[list[TranscriptSegment]] = []
    arrived = anyio.Event()

    async def on_segments(segments: list[TranscriptSegment]) -> None:
        batches.append(segments)
        arrived.set()
        await stream.close()

    stream = await engine.open(language="en", sample_rate=RATE, on_segments=on_segments)
    await stream.send(_clip("grocery"))
    with anyio.fail_after(30):
        await arrived.wait()
    await anyio.sleep(1.0)
    assert len(batches) == 1


@pytest.mark.anyio
async def test_concurrent_streams_get_only_their_own_words(engine: WhisperSpeechToText) -> None:
    grocery, lecture = Collector(), Collector()
    async with anyio.create_task_group() as group:
        group.start_soon(_stream, engine, _clip("grocery"), grocery)
        group.start_soon(_stream, engine, _clip("lecture"), lecture)
    assert wer(str(CORPUS["grocery"]["text"]), grocery.text) <= 0.25
    assert wer(str(CORPUS["lecture"]["text"]), lecture.text) <= 0.25
    assert "milk" in grocery.text.lower()
    assert "milk" not in lecture.text.lower()
    assert "photosynthesis" in lecture.text.lower()
    assert "photosynthesis" not in grocery.text.lower()


def _resample(pcm: bytes, rate: int) -> bytes:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2")[None, :], format="s16", layout="mono")
    frame.sample_rate = RATE
    frames = resampler.resample(frame) + resampler.resample(None)
    return b"".join(f.to_ndarray().tobytes() for f in frames)


@pytest.mark.anyio
async def test_transcribe_pcm_resamples_other_rates(engine: WhisperSpeechToText) -> None:
    segments = await engine.transcribe_pcm(_resample(_clip("short"), 48_000), sample_rate=48_000)
    assert wer("Okay, thanks.", " ".join(s.text for s in segments)) == 0.0
    assert all(0.2 <= s.start <= s.end <= 2.55 + 0.1 for s in segments)
    # 8 kHz works too, though tiny.en hears telephone-band speech much worse
    segments = await engine.transcribe_pcm(_resample(_clip("short"), 8_000), sample_rate=8_000)
    assert "okay" in " ".join(s.text for s in segments).lower()
    assert all(0.2 <= s.start <= s.end <= 2.55 + 0.1 for s in segments)


@pytest.mark.anyio
async def test_odd_sends_and_empty_streams(engine: WhisperSpeechToText) -> None:
    collector = Collector()
    stream = await engine.open(language="en-US", sample_rate=RATE, on_segments=collector)
    await stream.send(b"\x00")
    await stream.send(b"\x00\x00\x00")
    await stream.finish()
    assert collector.batches == []
    with pytest.raises(SpeechStreamError):
        await stream.send(b"\x00\x00")
    await stream.close()


@pytest.mark.anyio
async def test_unknown_language_is_refused(engine: WhisperSpeechToText) -> None:
    with pytest.raises(ValueError, match="English only"):
        await engine.open(language="es", sample_rate=RATE, on_segments=Collector())


@pytest.mark.anyio
async def test_a_failing_callback_fails_the_stream(engine: WhisperSpeechToText) -> None:
    async def on_segments(segments: list[TranscriptSegment]) -> None:
        raise RuntimeError("boom")

    stream = await engine.open(language="en", sample_rate=RATE, on_segments=on_segments)
    await stream.send(_clip("short"))
    with pytest.raises(SpeechStreamError):
        await stream.finish()
    await stream.close()

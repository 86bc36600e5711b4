"""The Omi codec decoders, resampling and WAV helpers of ``app.core.audio``."""

from __future__ import annotations

import io
import itertools
import json
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from app.core.audio import (
    MAX_FRAME_BYTES,
    AudioDecoder,
    FrameTooLarge,
    OpusDecoder,
    UndecodableAudio,
    UnsupportedAudio,
    UtteranceCutter,
    make_decoder,
    read_wav,
    to_float32,
    to_target_rate,
)
from tests.wer import normalise, wer

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
CORPUS = json.loads((AUDIO / "corpus.json").read_text())
RATE = 16_000


def _tone(freq: float, rate: int, seconds: float = 1.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12_000).astype("<i2")


def _decode_frames(decoder: AudioDecoder, frames: list[bytes]) -> npt.NDArray[np.float32]:
    pcm = b"".join(decoder.decode(f) for f in frames) + decoder.flush()
    return to_float32(pcm)


def _spectrum_db(signal: npt.NDArray[np.float32], rate: int, freq: float) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    bins = np.fft.rfftfreq(signal.size, 1 / rate)
    near = np.abs(bins - freq) < 20
    return float(20 * np.log10(spectrum[near].max() / spectrum.max()))


def _wav(samples: npt.NDArray[np.int16], rate: int, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def test_pcm8_upsampling_keeps_a_tone_at_its_frequency() -> None:
    tone = _tone(440, 8_000)
    frames = [tone[i : i + 160].tobytes() for i in range(0, tone.size, 160)]  # 20 ms frames
    out = _decode_frames(make_decoder("pcm8", 8_000, 1), frames)

    assert out.size == 2 * tone.size
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak = np.fft.rfftfreq(out.size, 1 / 16_000)[spectrum.argmax()]
    assert abs(peak - 440) <= 2
    assert _spectrum_db(out, 16_000, 8_000 - 440) < -50  # the image a naive upsampler leaves


def test_pcm16_passes_through() -> None:
    frame = _tone(1_000, 16_000, 0.02).tobytes()
    decoder = make_decoder("pcm16", 16_000, 1)
    assert decoder.decode(frame) == frame
    assert decoder.flush() == b""


def test_pcm_at_other_rates_is_resampled() -> None:
    tone = _tone(1_000, 44_100)
    out = to_float32(to_target_rate(tone.tobytes(), 44_100))
    assert abs(out.size - 16_000) <= 1
    assert _spectrum_db(out, 16_000, 1_000) == 0.0


def _opus_packets(samples: npt.NDArray[np.int16], rate: int = 16_000) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = rate
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 32_000
    encoder.open()
    step = rate // 50  # 20 ms
    packets: list[bytes] = []
    for i in range(0, samples.size - step + 1, step):
        frame = av.AudioFrame.from_ndarray(samples[None, i : i + step], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets


def test_opus_round_trip_of_a_corpus_clip() -> None:
    pcm, rate, _ = read_wav((AUDIO / "grocery.wav").read_bytes())
    original = np.frombuffer(pcm, dtype="<i2")
    packets = _opus_packets(original, rate)
    assert all(len(p) < 1_500 for p in packets)

    out = _decode_frames(OpusDecoder(16_000), packets)

    assert abs(out.size - original.size) <= 16_000 * 0.05
    reference = original.astype(np.float32) / 32_768
    n = min(out.size, reference.size) - 1_000

    def similarity(lag: int) -> float:
        return float(np.corrcoef(reference[:n], out[lag : lag + n])[0, 1])

    assert max(similarity(lag) for lag in range(0, 400, 2)) > 0.8


@pytest.mark.parametrize("packet", [b"\xff\xff\xff", b"garbage!", b"\x03\xff"])
def test_garbage_opus_is_undecodable(packet: bytes) -> None:
    decoder = make_decoder("opus", 16_000, 1)
    with pytest.raises(UndecodableAudio) as info:
        decoder.decode(packet)
    assert info.value.close_code == 1007


def test_empty_frames_are_ignored() -> None:
    for codec, rate in (("pcm8", 8_000), ("pcm16", 16_000), ("opus", 16_000)):
        assert make_decoder(codec, rate, 1).decode(b"") == b""


def test_odd_length_pcm_is_undecodable() -> None:
    with pytest.raises(UndecodableAudio):
        make_decoder("pcm16", 16_000, 1).decode(b"\x00\x01\x02")
    with pytest.raises(UndecodableAudio):
        make_decoder("pcm8", 8_000, 1).decode(b"\x00")


@pytest.mark.parametrize(
    ("codec", "rate", "channels"),
    [
        ("mp3", 16_000, 1),
        ("PCM16", 16_000, 1),
        ("pcm16", 7_000, 1),
        ("pcm8", 96_000, 1),
        ("pcm16", 0, 1),
        ("opus", 44_100, 1),
        ("opus", 16_000, 2),
        ("pcm16", 16_000, 2),
        ("pcm8", 8_000, 0),
    ],
)
def test_unsupported_parameters(codec: str, rate: int, channels: int) -> None:
    with pytest.raises(UnsupportedAudio) as info:
        make_decoder(codec, rate, channels)
    assert info.value.close_code == 1003


@pytest.mark.parametrize(("codec", "rate"), [("pcm8", 8_000), ("pcm16", 16_000), ("opus", 16_000)])
def test_oversized_frames_are_refused(codec: str, rate: int) -> None:
    decoder = make_decoder(codec, rate, 1)
    decoder.decode(bytes(MAX_FRAME_BYTES if codec != "opus" else 3))  # at the limit: fine
    with pytest.raises(FrameTooLarge) as info:
        decoder.decode(bytes(MAX_FRAME_BYTES + 2))
    assert info.value.close_code == 1009


def test_read_wav_of_a_corpus_file() -> None:
    pcm, rate, duration = read_wav((AUDIO / "standup.wav").read_bytes())
    assert rate == CORPUS["standup"]["sample_rate"] == 16_000
    assert duration == pytest.approx(CORPUS["standup"]["duration_s"], abs=0.01)
    assert len(pcm) == round(duration * rate) * 2
    samples = to_float32(pcm)
    assert samples.dtype == np.float32
    assert -1.0 <= samples.min() < 0 < samples.max() < 1.0


def test_read_wav_mixes_stereo_down() -> None:
    left = _tone(440, 16_000, 0.5)
    stereo = np.stack([left, left], axis=1).reshape(-1)
    pcm, rate, duration = read_wav(_wav(stereo, 16_000, channels=2))
    assert (rate, duration) == (16_000, 0.5)
    assert np.array_equal(np.frombuffer(pcm, dtype="<i2"), left)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not a wav file at all", UndecodableAudio),
        (b"RIFF", UndecodableAudio),
        (_wav(np.zeros(0, dtype="<i2"), 16_000), UndecodableAudio),
        (_wav(np.zeros(100, dtype=np.uint8), 16_000, width=1), UnsupportedAudio),
        (_wav(np.zeros(100, dtype="<i2"), 5_000), UnsupportedAudio),
    ],
)
def test_read_wav_refuses_bad_files(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_wav(data)


def test_read_wav_refuses_float_wav() -> None:
    data = bytearray(_wav(np.zeros(100, dtype="<i2"), 16_000))
    data[20:22] = (3).to_bytes(2, "little")  # WAVE_FORMAT_IEEE_FLOAT
    with pytest.raises(UnsupportedAudio):
        read_wav(bytes(data))


def test_to_float32_refuses_odd_lengths() -> None:
    with pytest.raises(UndecodableAudio):
        to_float32(b"\x00")


def test_wer_normalises_numbers_and_punctuation() -> None:
    words = ["21", "oclock", "on", "the", "15th", "okay"]
    assert normalise("Twenty-one o'clock, on the fifteenth: OK!") == words
    assert wer("Next Tuesday at three.", "next tuesday at 3") == 0.0
    assert wer("a b c d", "a x c") == 0.5
    assert wer("", "") == 0.0


def _noise(seconds: float, db: float, seed: int = 0) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(RATE * seconds)) * 32768 * 10 ** (db / 20)).astype("<i2")


def _silence(seconds: float) -> npt.NDArray[np.int16]:
    return np.zeros(int(RATE * seconds), dtype="<i2")


def test_cuts_at_pauses_longer_than_the_hangover() -> None:
    word, gap = _noise(0.5, -20), _silence(0.2)
    audio = np.concatenate([_silence(1.0), _noise(1.0, -20), _silence(1.0), word, gap, word, _silence(1.0)])
    cutter = UtteranceCutter()
    utterances = cutter.feed(audio.tobytes()) + cutter.flush()

    assert len(utterances) == 2
    first, second = utterances
    assert first.start / RATE == pytest.approx(0.7, abs=0.031)  # 0.3 s of pre-roll
    assert (first.start + first.voiced_start) / RATE == pytest.approx(1.0, abs=0.031)
    assert (first.start + first.voiced_end) / RATE == pytest.approx(2.0, abs=0.031)
    assert (second.start + second.voiced_start) / RATE == pytest.approx(3.0, abs=0.031)
    assert (second.start + second.voiced_end) / RATE == pytest.approx(4.2, abs=0.031)  # the 0.2 s gap kept
    assert second.samples.size / RATE < 1.2 + 0.3 + 0.3 + 0.031


def test_chunking_does_not_change_the_cuts() -> None:
    audio = np.concatenate([_noise(0.8, -25), _silence(0.9), _noise(1.3, -25), _silence(0.4)]).tobytes()
    whole = UtteranceCutter()
    expected = whole.feed(audio) + whole.flush()
    chunked = UtteranceCutter()
    found = [u for i in range(0, len(audio), 702) for u in chunked.feed(audio[i : i + 702])] + chunked.flush()
    assert [(u.start, u.voiced_start, u.voiced_end) for u in found] == [
        (u.start, u.voiced_start, u.voiced_end) for u in expected
    ]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(found, expected, strict=True))


def test_continuous_speech_is_cut_by_length_without_losing_audio() -> None:
    t = np.arange(45 * RATE) / RATE
    syllables = np.abs(np.sin(2 * np.pi * 2.5 * t)) ** 3  # 5 dips a second, never a pause
    audio = (_noise(45.0, -20) * (0.05 + syllables)).astype("<i2")
    cutter = UtteranceCutter()
    utterances = cutter.feed(audio.tobytes()) + cutter.flush()
    assert len(utterances) == 3
    assert all(u.samples.size <= 18 * RATE for u in utterances)
    assert utterances[0].start == 0
    for before, after in itertools.pairwise(utterances):
        assert after.start == before.start + before.samples.size
    assert sum(u.samples.size for u in utterances) == audio.size // 480 * 480


def test_noise_floor_clicks_and_silence_make_no_utterance() -> None:
    quiet = _noise(3.0, -60)
    click = np.concatenate([_silence(1.0), _noise(0.06, -10), _silence(1.0)])
    for audio in (quiet, click, _silence(2.0)):
        cutter = UtteranceCutter()
        assert cutter.feed(audio.tobytes()) + cutter.flush() == []


def test_steady_noise_stops_counting_as_speech() -> None:
    cutter = UtteranceCutter()
    utterances = cutter.feed(_noise(30.0, -40).tobytes()) + cutter.flush()
    assert sum(u.samples.size for u in utterances) < 12 * RATE

"""Audio in: the Omi codecs decoded to 16 kHz 16-bit mono PCM, WAV helpers, cuts at pauses.

Codecs (OMI_CONTRACT.md section 4): ``pcm8`` and ``pcm16`` are 16-bit little-endian mono
linear PCM, ``opus`` is one raw Opus packet per WebSocket frame. For the PCM codecs the codec
names the sample format and the client's ``sample_rate`` the rate, as the original server did
(it forwarded both to Deepgram as ``linear16`` at ``sample_rate``); the app sends 8000 with
``pcm8`` and 16000 with ``pcm16`` and ``opus``. Every decoder returns 16 kHz, the rate the
speech-to-text engines are opened at.

Resampling uses libswresample through PyAV's ``AudioResampler``: a proper windowed-sinc
filter that keeps its state from one frame to the next, so a stream cut into 20 ms frames
resamples exactly like the whole signal (no clicks at frame edges, images of an 8 kHz input
suppressed). It delays the output by about 2 ms; ``flush()`` returns the tail at the end of a
stream. Opus packets are decoded by FFmpeg's libopus decoder, bundled in PyAV's wheels.

All of this runs synchronously on the caller's thread: a 20 ms frame costs about 0.1 ms (PCM)
to 0.2 ms (Opus), about 1% of a core per live session, less than a hop to a worker thread.

:class:`UtteranceCutter` cuts a 16 kHz stream into utterances at pauses, for engines that
transcribe utterance by utterance (Whisper).

Errors carry the WebSocket close code the live session should use: an unknown codec or
parameter is :class:`UnsupportedAudio` (1003), a frame that does not decode is
:class:`UndecodableAudio` (1007), a frame over the size limit is :class:`FrameTooLarge` (1009).
"""

from __future__ import annotations

import io
import wave
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.error import FFmpegError

__all__ = [
    "CODECS",
    "FRAME",
    "MAX_FRAME_BYTES",
    "TARGET_RATE",
    "AudioDecoder",
    "AudioError",
    "FrameTooLarge",
    "OpusDecoder",
    "PcmDecoder",
    "UndecodableAudio",
    "UnsupportedAudio",
    "Utterance",
    "UtteranceCutter",
    "make_decoder",
    "read_wav",
    "to_float32",
    "to_target_rate",
]

TARGET_RATE: Final = 16_000
FRAME: Final = TARGET_RATE * 30 // 1000  # samples in a 30 ms frame (voice activity)
MAX_FRAME_BYTES: Final = 64 * 1024
CODECS: Final = ("pcm8", "pcm16", "opus")
PCM_RATES: Final = frozenset({8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000})
OPUS_RATES: Final = frozenset({8_000, 12_000, 16_000, 24_000, 48_000})  # the rates Opus defines

Int16Array = npt.NDArray[np.int16]


class AudioError(ValueError):
    """Audio the server cannot take; ``close_code`` is the WebSocket close code to answer with."""

    close_code: int = 1007


class UnsupportedAudio(AudioError):
    """An unknown codec, or a sample rate or channel count we do not take."""

    close_code = 1003


class UndecodableAudio(AudioError):
    """A frame (or file) that is not valid data for its codec."""

    close_code = 1007


class FrameTooLarge(AudioError):
    """A frame over :data:`MAX_FRAME_BYTES`."""

    close_code = 1009


class AudioDecoder(Protocol):
    """One stream's decoder: frames in, 16 kHz 16-bit little-endian mono PCM out."""

    def decode(self, frame: bytes) -> bytes:
        """Decode one frame; may return less (or more) audio than the frame held, resampling."""

    def flush(self) -> bytes:
        """The audio still held back at the end of the stream."""


class _Resampler:
    """Stateful resampling of mono audio to 16 kHz s16 (libswresample through PyAV)."""

    def __init__(self) -> None:
        self._swr = av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)
        self._flushed = False

    def samples(self, samples: Int16Array, rate: int) -> bytes:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        return self.frame(frame)

    def frame(self, frame: av.AudioFrame) -> bytes:
        return _join(self._swr.resample(frame))

    def flush(self) -> bytes:
        if self._flushed:
            return b""
        self._flushed = True
        return _join(self._swr.resample(None))


def _join(frames: list[av.AudioFrame]) -> bytes:
    return b"".join(np.asarray(f.to_ndarray(), dtype="<i2").tobytes() for f in frames)


def _check_size(frame: bytes, limit: int | None) -> None:
    if limit is not None and len(frame) > limit:
        raise FrameTooLarge(f"audio frame of {len(frame)} bytes is over the {limit}-byte limit")


class PcmDecoder:
    """16-bit little-endian mono PCM at ``sample_rate``: passed through at 16 kHz, else resampled.

    Args:
        sample_rate: the input rate, one of the standard rates from 8 to 48 kHz.
        max_frame_bytes: the largest frame taken, ``None`` for no limit (whole files).
    """

    def __init__(self, sample_rate: int, *, max_frame_bytes: int | None = MAX_FRAME_BYTES) -> None:
        if sample_rate not in PCM_RATES:
            raise UnsupportedAudio(f"PCM sample rate {sample_rate} Hz is not supported")
        self.sample_rate = sample_rate
        self._limit = max_frame_bytes
        self._resampler = None if sample_rate == TARGET_RATE else _Resampler()

    def decode(self, frame: bytes) -> bytes:
        _check_size(frame, self._limit)
        if len(frame) % 2:  # frames hold whole samples (the app never splits one)
            raise UndecodableAudio(f"a 16-bit PCM frame must hold an even number of bytes, not {len(frame)}")
        if self._resampler is None or not frame:
            return bytes(frame)
        return self._resampler.samples(np.frombuffer(frame, dtype="<i2"), self.sample_rate)

    def flush(self) -> bytes:
        return b"" if self._resampler is None else self._resampler.flush()


class OpusDecoder:
    """One raw Opus packet per frame (FFmpeg's libopus decoder), resampled to 16 kHz.

    An empty frame is ignored: handing libopus an empty packet would end the stream. Opus has
    no checksum: a packet cut short, or random bytes, that still follow the framing rules of
    RFC 6716 section 3.4 decode (to noise); a packet that breaks them raises ``UndecodableAudio``.
    """

    def __init__(self, sample_rate: int, *, max_frame_bytes: int | None = MAX_FRAME_BYTES) -> None:
        if sample_rate not in OPUS_RATES:
            raise UnsupportedAudio(f"Opus sample rate {sample_rate} Hz is not supported")
        self.sample_rate = sample_rate
        self._limit = max_frame_bytes
        if "libopus" in av.codecs_available:
            self._codec = av.CodecContext.create("libopus", "r")
        else:  # FFmpeg's own Opus decoder
            self._codec = av.CodecContext.create("opus", "r")
        self._codec.sample_rate = sample_rate
        self._codec.layout = "mono"
        self._resampler = _Resampler()

    def decode(self, frame: bytes) -> bytes:
        _check_size(frame, self._limit)
        if not frame:
            return b""
        try:
            return b"".join(self._resampler.frame(f) for f in self._codec.decode(av.Packet(frame)))
        except (FFmpegError, ValueError) as exc:  # the packet breaks RFC 6716 section 3.4
            raise UndecodableAudio(f"not a valid Opus packet ({len(frame)} bytes)") from exc

    def flush(self) -> bytes:
        return self._resampler.flush()


def make_decoder(codec: str, sample_rate: int, channels: int = 1) -> AudioDecoder:
    """The decoder for a live session's ``codec``, ``sample_rate`` and ``channels``.

    Raises:
        UnsupportedAudio: an unknown codec, a sample rate the codec does not have, or more
            than one channel.
    """
    if channels != 1:
        raise UnsupportedAudio(f"only mono audio is supported, not {channels} channels")
    if codec in ("pcm8", "pcm16"):
        return PcmDecoder(sample_rate)
    if codec == "opus":
        return OpusDecoder(sample_rate)
    raise UnsupportedAudio(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")


def to_target_rate(pcm16: bytes, sample_rate: int) -> bytes:
    """Whole 16-bit mono PCM at ``sample_rate`` resampled to 16 kHz."""
    decoder = PcmDecoder(sample_rate, max_frame_bytes=None)
    return decoder.decode(pcm16) + decoder.flush()


def read_wav(data: bytes) -> tuple[bytes, int, float]:
    """The 16-bit mono PCM, sample rate and duration (seconds) of a PCM WAV file.

    Stereo (or more) is mixed down to mono; the rate is kept (see :func:`to_target_rate`).

    Raises:
        UndecodableAudio: not a WAV file, or an empty one.
        UnsupportedAudio: a WAV that is not 16-bit integer PCM, or an unusual sample rate.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            if width != 2:
                raise UnsupportedAudio(f"only 16-bit PCM WAV is supported, not {8 * width}-bit")
            if rate not in PCM_RATES:
                raise UnsupportedAudio(f"WAV sample rate {rate} Hz is not supported")
            raw = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        kind = UnsupportedAudio if str(exc).startswith("unknown format") else UndecodableAudio
        raise kind(f"not a 16-bit PCM WAV file: {exc}") from exc
    except EOFError as exc:
        raise UndecodableAudio("truncated WAV file") from exc
    samples = np.frombuffer(raw[: len(raw) // (2 * channels) * 2 * channels], dtype="<i2")
    if channels > 1:
        mixed = samples.reshape(-1, channels).astype(np.int32).mean(axis=1)
        samples = np.round(mixed).astype("<i2")
    if samples.size == 0:
        raise UndecodableAudio("the WAV file holds no audio")
    return samples.tobytes(), rate, samples.size / rate


def to_float32(pcm16: bytes) -> npt.NDArray[np.float32]:
    """16-bit little-endian PCM as float32 samples in [-1, 1)."""
    if len(pcm16) % 2:
        raise UndecodableAudio("16-bit PCM must hold an even number of bytes")
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / np.float32(32768.0)


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of audio to transcribe; sample positions are on the stream's 16 kHz timeline."""

    start: int
    samples: npt.NDArray[np.int16]
    voiced_start: int  # first voiced sample, relative to ``start``
    voiced_end: int  # end of the last voiced frame, relative to ``start``


def _frames(seconds: float) -> int:
    return max(1, round(seconds * TARGET_RATE / FRAME))


class UtteranceCutter:
    """Cuts 16 kHz 16-bit PCM into utterances at pauses (energy VAD on 30 ms frames).

    A frame is voiced when its level is above both ``floor_db`` (absolute) and the adaptive
    noise floor plus ``margin_db``; the noise floor follows the quietest recent frames and
    creeps up slowly, so steady background noise stops counting as speech after a few seconds.
    """

    def __init__(
        self,
        *,
        hangover_s: float = 0.6,
        pre_roll_s: float = 0.3,
        tail_s: float = 0.3,
        max_s: float = 18.0,
        search_s: float = 4.0,
        min_voiced_s: float = 0.15,
        floor_db: float = -50.0,
        margin_db: float = 10.0,
    ) -> None:
        self._hangover, self._tail, self._max = _frames(hangover_s), _frames(tail_s), _frames(max_s)
        self._search, self._min_voiced = _frames(search_s), _frames(min_voiced_s)
        self._abs_db, self._margin_db = floor_db, margin_db
        self._noise_db = -60.0
        self._pending = np.zeros(0, dtype=np.int16)
        self._pre: deque[npt.NDArray[np.int16]] = deque(maxlen=_frames(pre_roll_s))
        self._frames: list[npt.NDArray[np.int16]] = []  # the utterance in progress
        self._levels: list[float] = []
        self._voiced: list[bool] = []
        self._start = 0  # frame index of self._frames[0]
        self._index = 0  # frames seen
        self._silence = 0  # trailing unvoiced frames of the utterance in progress

    def feed(self, pcm16: bytes) -> list[Utterance]:
        """Take more audio; the utterances it completes."""
        data = np.concatenate([self._pending, np.frombuffer(pcm16, dtype="<i2")])
        count = data.size // FRAME
        self._pending = data[count * FRAME :].copy()
        frames = data[: count * FRAME].reshape(count, FRAME)
        power = np.mean(np.square(frames, dtype=np.float64), axis=1) / 32768.0**2
        levels = 10 * np.log10(power + 1e-12)
        done = (self._step(frame, float(level)) for frame, level in zip(frames, levels, strict=True))
        return [u for u in done if u is not None]

    def flush(self) -> list[Utterance]:
        """The utterance in progress at the end of the stream, if it holds speech."""
        if self._frames and self._pending.size:
            self._frames.append(self._pending)
            self._levels.append(-120.0)
            self._voiced.append(False)
        self._pending = np.zeros(0, dtype=np.int16)
        end = len(self._frames) - max(0, self._silence - self._tail)
        utterance = self._cut(end) if self._frames else None
        self._frames, self._levels, self._voiced = [], [], []
        return [utterance] if utterance else []

    def _is_voiced(self, level: float) -> bool:
        voiced = level > max(self._abs_db, self._noise_db + self._margin_db)
        self._noise_db = max(-90.0, level if level < self._noise_db else min(level, self._noise_db + 0.05))
        return voiced

    def _step(self, frame: npt.NDArray[np.int16], level: float) -> Utterance | None:
        voiced = self._is_voiced(level)
        self._index += 1
        if not self._frames:
            if not voiced:
                self._pre.append(frame)
                return None
            self._frames = [*self._pre, frame]
            self._levels = [-120.0] * len(self._pre) + [level]
            self._voiced = [False] * len(self._pre) + [True]
            self._start = self._index - len(self._frames)
            self._pre.clear()
            self._silence = 0
            return None
        self._frames.append(frame)
        self._levels.append(level)
        self._voiced.append(voiced)
        self._silence = 0 if voiced else self._silence + 1
        if self._silence >= self._hangover:
            keep = len(self._frames) - self._silence + self._tail
            self._pre.extend(self._frames[keep:])
            utterance = self._cut(keep)
            self._frames, self._levels, self._voiced = [], [], []
            return utterance
        if len(self._frames) >= self._max:
            window = self._levels[-self._search :]
            return self._cut(len(self._frames) - self._search + int(np.argmin(window)) + 1)
        return None

    def _cut(self, end: int) -> Utterance | None:
        """Take frames ``[:end]`` of the utterance in progress out as an utterance."""
        frames, voiced, start = self._frames[:end], self._voiced[:end], self._start
        self._frames, self._levels, self._voiced = self._frames[end:], self._levels[end:], self._voiced[end:]
        self._start += end
        self._silence = min(self._silence, len(self._frames))
        if sum(voiced) < self._min_voiced:
            return None
        first = voiced.index(True)
        last = len(voiced) - 1 - voiced[::-1].index(True)
        return Utterance(start * FRAME, np.concatenate(frames), first * FRAME, (last + 1) * FRAME)

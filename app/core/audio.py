"""Audio in: the Omi codecs decoded to 16 kHz 16-bit little-endian mono PCM, and WAV helpers.

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

All of this runs synchronously on the caller's thread: a 20 ms frame costs a few tens of
microseconds, far less than handing it to a worker thread would.

Errors carry the WebSocket close code the live session should use: an unknown codec or
parameter is :class:`UnsupportedAudio` (1003), a frame that does not decode is
:class:`UndecodableAudio` (1007), a frame over the size limit is :class:`FrameTooLarge` (1009).
"""

from __future__ import annotations

import io
import wave
from typing import Final, Protocol

import av
import numpy as np
import numpy.typing as npt
from av.error import FFmpegError

__all__ = [
    "CODECS",
    "MAX_FRAME_BYTES",
    "TARGET_RATE",
    "AudioDecoder",
    "AudioError",
    "FrameTooLarge",
    "OpusDecoder",
    "PcmDecoder",
    "UndecodableAudio",
    "UnsupportedAudio",
    "make_decoder",
    "read_wav",
    "to_float32",
    "to_target_rate",
]

TARGET_RATE: Final = 16_000
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
        if len(frame) % 2:
            raise UndecodableAudio("a 16-bit PCM frame must hold an even number of bytes")
        if self._resampler is None or not frame:
            return bytes(frame)
        return self._resampler.samples(np.frombuffer(frame, dtype="<i2"), self.sample_rate)

    def flush(self) -> bytes:
        return b"" if self._resampler is None else self._resampler.flush()


class OpusDecoder:
    """One raw Opus packet per frame (FFmpeg's libopus decoder), resampled to 16 kHz.

    An empty frame is ignored: handing libopus an empty packet would end the stream.
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
        except (FFmpegError, ValueError) as exc:
            raise UndecodableAudio(f"not a valid Opus packet: {exc}") from exc

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

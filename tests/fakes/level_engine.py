"""A scripted speech-to-text engine whose words and times are exact, and the audio it hears.

:class:`LevelEngine` hears each half second of 16-bit PCM at the constant level ``256 * k`` as
the word ``w<k>`` spoken over exactly that half second (:func:`tone` makes such audio). A silent
chunk, the stream's ``finish`` or, with ``batch``, that many pending words end a final result.
With ``two_speakers`` it diarises like Deepgram: ``w50`` and up are ``SPEAKER_1``, the rest
``SPEAKER_0``; without, every word is ``SPEAKER_0``.
"""

from __future__ import annotations

import numpy as np

from app.core.models import TranscriptSegment
from app.core.ports import SegmentsCallback

__all__ = ["RATE", "LevelEngine", "LevelStream", "tone"]

RATE = 16_000


def tone(*levels: int) -> bytes:
    """Half a second of 16 kHz PCM at the constant level ``256 * k`` for each ``k`` (0 is silence)."""
    return b"".join(np.full(RATE // 2, level * 256, dtype="<i2").tobytes() for level in levels)


class LevelStream:
    """Words from half-second chunks; a silent chunk or ``batch`` pending words end a result."""

    def __init__(
        self, sample_rate: int, on_segments: SegmentsCallback, *, batch: int | None, two_speakers: bool
    ) -> None:
        self.chunk = sample_rate  # half a second of 16-bit samples, in bytes
        self.on_segments = on_segments
        self.batch = batch
        self.two_speakers = two_speakers
        self.buffer = bytearray()
        self.index = 0
        self.pending: list[TranscriptSegment] = []

    async def send(self, pcm: bytes) -> None:
        self.buffer += pcm
        while len(self.buffer) >= self.chunk:
            chunk, self.buffer = bytes(self.buffer[: self.chunk]), self.buffer[self.chunk :]
            level = round(float(np.abs(np.frombuffer(chunk, dtype="<i2").astype(np.float64)).mean()) / 256)
            start = self.index * 0.5
            self.index += 1
            if level:
                speaker = f"SPEAKER_{int(self.two_speakers and level >= 50)}"
                self.pending.append(
                    TranscriptSegment(text=f"w{level}", speaker=speaker, start=start, end=start + 0.5)
                )
            full = self.batch is not None and len(self.pending) >= self.batch
            if self.pending and (not level or full):
                await self.finish()

    async def finish(self) -> None:
        segments, self.pending = self.pending, []
        if segments:
            await self.on_segments(segments)

    async def close(self) -> None:
        self.pending = []


class LevelEngine:
    """One :class:`LevelStream` per ``open``, each kept in ``streams``.

    Args:
        batch: End a result once this many words are pending (``None``: only on silence).
        two_speakers: ``w50`` and up are ``SPEAKER_1`` (else every word is ``SPEAKER_0``).
        sample_rate: If given, ``open`` asserts it is asked for this rate.
    """

    def __init__(
        self, *, batch: int | None = None, two_speakers: bool = False, sample_rate: int | None = None
    ) -> None:
        self.batch = batch
        self.two_speakers = two_speakers
        self.sample_rate = sample_rate
        self.streams: list[LevelStream] = []

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> LevelStream:
        assert self.sample_rate is None or sample_rate == self.sample_rate, sample_rate
        stream = LevelStream(sample_rate, on_segments, batch=self.batch, two_speakers=self.two_speakers)
        self.streams.append(stream)
        return stream

    async def close(self) -> None:
        pass

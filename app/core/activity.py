"""Voice activity on live audio: is anyone speaking right now?

The silence timer of a live session runs from the last speech. Final results alone do not
tell when that was: an engine that transcribes utterance by utterance (Whisper) says nothing
until a sentence is over, so a long sentence would look like silence. :class:`VoiceActivity`
looks at the audio itself, with the same energy detector the Whisper adapter cuts utterances
with: 30 ms frames against an adaptive noise floor that follows the quietest recent frames
and creeps up slowly, so steady background noise stops counting as speech within seconds.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from app.core.audio import FRAME

__all__ = ["VoiceActivity"]

_FRAME_BYTES: Final = FRAME * 2


class VoiceActivity:
    """Energy voice detection on a stream of 16 kHz 16-bit mono PCM.

    Args:
        floor_db: the level (dBFS) below which nothing is speech.
        margin_db: how far above the noise floor a frame must be to count as speech.
    """

    def __init__(self, floor_db: float = -50.0, margin_db: float = 10.0) -> None:
        self._floor_db = floor_db
        self._margin_db = margin_db
        self._noise_db = -60.0
        self._pending = b""

    def voiced(self, pcm16: bytes) -> bool:
        """Take more audio; whether any whole 30 ms frame in it was speech."""
        data = self._pending + pcm16
        count = len(data) // _FRAME_BYTES
        self._pending = data[count * _FRAME_BYTES :]
        if not count:
            return False
        frames = np.frombuffer(data[: count * _FRAME_BYTES], dtype="<i2").reshape(count, FRAME)
        power = np.mean(np.square(frames, dtype=np.float64), axis=1) / 32768.0**2
        heard = False
        for level in (10 * np.log10(power + 1e-12)).tolist():
            heard |= level > max(self._floor_db, self._noise_db + self._margin_db)
            rising = min(level, self._noise_db + 0.05)
            self._noise_db = max(-90.0, level if level < self._noise_db else rising)
        return heard

"""Speech profiles: a few seconds of the user's voice, stored as a 16 kHz mono 16-bit WAV.

The profile lives in the BlobStore at ``{uid}/speech_profile.wav`` and its length in seconds
in the KeyValue port at ``users:{uid}:speech_profile_duration``. A live session with
``include_speech_profile`` streams it to the engine before the live audio to learn which
diarised speaker is the user (see :mod:`app.core.transcript`).
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Sequence
from typing import Final

from app.core.audio import TARGET_RATE, OpusDecoder, UndecodableAudio, read_wav, to_target_rate
from app.core.ports import BlobStore, KeyValue

__all__ = [
    "MAX_PROFILE_S",
    "MIN_PROFILE_S",
    "ProfileError",
    "decode_opus_packets",
    "duration_key",
    "has_profile",
    "load_profile",
    "profile_path",
    "save_profile",
    "validate_profile_wav",
    "wav_bytes",
]

MIN_PROFILE_S: Final = 5.0
MAX_PROFILE_S: Final = 120.0


class ProfileError(ValueError):
    """A profile the server does not take; the message says why (an HTTP 400)."""


def profile_path(uid: str) -> str:
    return f"{uid}/speech_profile.wav"


def duration_key(uid: str) -> str:
    return f"users:{uid}:speech_profile_duration"


def wav_bytes(pcm16: bytes, sample_rate: int = TARGET_RATE) -> bytes:
    """16-bit mono PCM as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm16)
    return out.getvalue()


def _check_length(seconds: float, low: float = MIN_PROFILE_S, high: float = MAX_PROFILE_S) -> None:
    if not low <= seconds <= high:
        raise ProfileError(f"a speech profile must last {low:g} to {high:g} seconds, not {seconds:.1f}")


def validate_profile_wav(data: bytes) -> tuple[bytes, float]:
    """The PCM and duration of an uploaded profile: a 16 kHz mono 16-bit WAV of 5 to 120 s.

    Raises:
        ProfileError: anything else, with the reason.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            channels, rate = wav.getnchannels(), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ProfileError(f"the file is not a PCM WAV file ({exc})") from exc
    if channels != 1:
        raise ProfileError(f"the WAV must be mono, not {channels} channels")
    if rate != TARGET_RATE:
        raise ProfileError(f"the WAV must be sampled at {TARGET_RATE} Hz, not {rate} Hz")
    try:
        pcm, _, seconds = read_wav(data)
    except ValueError as exc:  # UndecodableAudio, UnsupportedAudio (e.g. 8-bit or 24-bit samples)
        raise ProfileError(str(exc)) from exc
    _check_length(seconds)
    return pcm, seconds


def decode_opus_packets(packets: Sequence[Sequence[int]]) -> tuple[bytes, float]:
    """The 16 kHz PCM and duration of raw Opus packets (the body of ``/v3/upload-bytes``).

    Raises:
        ProfileError: a packet that is not bytes or does not decode, or too much or too
            little audio.
    """
    decoder = OpusDecoder(TARGET_RATE, max_frame_bytes=None)
    chunks = []
    for index, packet in enumerate(packets):
        try:
            data = bytes(packet)
        except ValueError as exc:
            raise ProfileError(f"packet {index} holds a value that is not a byte (0..255)") from exc
        try:
            chunks.append(decoder.decode(data))
        except UndecodableAudio as exc:
            raise ProfileError(f"packet {index} is not a valid Opus packet") from exc
    pcm = b"".join(chunks) + decoder.flush()
    seconds = len(pcm) / (2 * TARGET_RATE)
    _check_length(seconds, low=1.0, high=MAX_PROFILE_S + 5)
    return pcm, seconds


async def save_profile(blobs: BlobStore, kv: KeyValue, uid: str, pcm16: bytes, seconds: float) -> str:
    """Store a 16 kHz profile and its duration; the URL of the stored WAV."""
    url = await blobs.put(profile_path(uid), wav_bytes(pcm16), "audio/wav")
    await kv.set(duration_key(uid), f"{seconds:.3f}")
    return url


async def has_profile(kv: KeyValue, uid: str) -> bool:
    return await kv.get(duration_key(uid)) is not None


async def load_profile(blobs: BlobStore, kv: KeyValue, uid: str) -> bytes | None:
    """The user's profile as 16 kHz 16-bit mono PCM, or ``None`` without one."""
    if not await has_profile(kv, uid):
        return None
    data = await blobs.get(profile_path(uid))
    if data is None:
        return None
    return await asyncio.to_thread(_pcm16k, data)


def _pcm16k(wav: bytes) -> bytes:
    pcm, rate, _ = read_wav(wav)
    return pcm if rate == TARGET_RATE else to_target_rate(pcm, rate)

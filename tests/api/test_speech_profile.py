"""Speech profiles: upload validation, storage, and what a profile does to a live session."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.speech_profile import duration_key, profile_path
from tests.api.conftest import Api
from tests.api.listen_support import (
    CORPUS,
    Listener,
    clip,
    encode,
    listen_app,
    listen_query,
    memory_text,
    opus_packets,
    silence,
    wait_for_memories,
)
from tests.wer import wer

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The default body limit (10 MiB): a 120 s profile is 3.8 MB."""
    return Settings(data_dir=tmp_path / "data")


def wav(seconds: float, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    samples = np.zeros(int(seconds * rate) * channels, dtype=f"<i{width}" if width > 1 else np.uint8)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def pcm_wav(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm)
    return out.getvalue()


async def upload(
    api: Api, data: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    files = {"file": ("profile.wav", data, "audio/wav")}
    response = await api.client.post("/v3/upload-audio", files=files, headers=headers or api.alice)
    return response.status_code, response.json()


async def test_upload_audio_takes_a_16_khz_mono_wav_of_5_to_120_seconds(api: Api) -> None:
    assert (await api.client.get("/v3/speech-profile", headers=api.alice)).json() == {"has_profile": False}
    bad = {
        "too short": (wav(4.9), "5 to 120 seconds"),
        "too long": (wav(120.5), "5 to 120 seconds"),
        "wrong rate": (wav(10, rate=8_000), "16000 Hz"),
        "stereo": (wav(10, channels=2), "mono"),
        "8-bit": (wav(10, width=1), "16-bit"),
        "not a wav": (b"ID3\x03\x00 an mp3 perhaps" * 100, "not a PCM WAV"),
        "empty": (b"", "not a PCM WAV"),
    }
    for case, (data, words) in bad.items():
        status, body = await upload(api, data)
        assert status == 400, case
        assert words in str(body["detail"]), (case, body)
    assert (await api.client.get("/v3/speech-profile", headers=api.alice)).json() == {"has_profile": False}
    assert await api.services.blobs.get(profile_path("alice")) is None
    # a good one
    status, body = await upload(api, wav(5.0))
    assert status == 200 and body == {"url": body["url"]} and str(body["url"])
    assert (await api.client.get("/v3/speech-profile", headers=api.alice)).json() == {"has_profile": True}
    assert (await api.client.get("/v3/speech-profile", headers=api.bob)).json() == {"has_profile": False}
    assert await api.services.kv.get(duration_key("alice")) == "5.000"
    stored = await api.services.blobs.get(profile_path("alice"))
    assert stored is not None and stored[:4] == b"RIFF"
    # a missing file part is a 400 too
    response = await api.client.post("/v3/upload-audio", files={"other": ("x", b"x")}, headers=api.alice)
    assert response.status_code == 400


async def test_upload_bytes_takes_the_opus_packets_of_a_profile(api: Api) -> None:
    packets = [list(p) for p in opus_packets(clip("grocery"))]
    body = {"bytes": packets, "duration": 9}
    response = await api.client.post("/v3/upload-bytes", json=body, headers=api.alice)
    assert response.status_code == 400  # duration 10..120
    body["duration"] = 10
    response = await api.client.post("/v3/upload-bytes", json=body, headers=api.alice)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert (
        abs(float(await api.services.kv.get(duration_key("alice")) or 0) - CORPUS["grocery"]["duration_s"])
        < 0.1
    )
    stored = await api.services.blobs.get(profile_path("alice"))
    assert stored is not None
    with wave.open(io.BytesIO(stored)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
    for broken in ([[255, 255, 255]], [[1, 2, 300]], []):
        response = await api.client.post(
            "/v3/upload-bytes", json={"bytes": broken, "duration": 10}, headers=api.bob
        )
        assert response.status_code == 400, broken
        assert response.json()["detail"]
    assert (await api.client.get("/v3/speech-profile", headers=api.bob)).json() == {"has_profile": False}


@pytest.mark.slow
async def test_the_profile_is_heard_first_dropped_and_its_speaker_is_the_user(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    async with listen_app(tmp_path, embedder) as api:
        status, _ = await upload(api, pcm_wav(clip("travel")))
        assert status == 200
        duration = CORPUS["grocery"]["duration_s"]
        for include, headers in (("true", api.alice), ("false", api.alice)):
            frames, _ = encode(clip("grocery") + silence(1.0), "pcm16")
            params = listen_query(include_speech_profile=include)
            with await api.client.websocket_connect("/listen", params=params, headers=headers) as ws:
                listener = Listener(ws)
                await listener.send(frames)
                await listener.until(lambda got: bool(got.segments), within=60)
            (memory,) = await wait_for_memories(api, api.alice)
            segments = memory["transcript_segments"]
            # only the live words, times from 0 within the live audio
            assert wer(CORPUS["grocery"]["text"], memory_text(memory)) <= 0.25, memory_text(memory)
            assert "flight" not in memory_text(memory).lower()
            assert 0 <= segments[0]["start"] < 1.0 and segments[-1]["end"] <= duration + 1.0
            assert listener.segments[0].start < 1.0
            assert all(s["is_user"] is (include == "true") for s in segments)
            assert all(s.is_user is (include == "true") for s in listener.segments)
            # deleted: the next session cannot resume it and makes a memory of its own
            await api.client.delete(f"/v1/memories/{memory['id']}", headers=api.alice)

"""Helpers for the ``/listen`` tests: corpus clips in each codec, and an async WebSocket client.

The test client's WebSocket session is synchronous (a queue between the test and the app,
which runs on the client's portal thread); :class:`Listener` runs its blocking receives in
worker threads so that the test's event loop (and a fake Deepgram server on it) keeps going.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from queue import Empty
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import av
import numpy as np
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import AsyncTestClient
from litestar.testing.websocket_test_session import WebSocketTestSession

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.audio import read_wav
from app.core.models import TranscriptSegment
from app.core.ports import SpeechToText
from app.core.tokens import TokenService
from app.main import create_app
from tests.api.conftest import WHISPER, Api, embedded_services

AUDIO = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
CORPUS: dict[str, dict[str, Any]] = json.loads((AUDIO / "corpus.json").read_text())
RATE = 16_000
RATES = {"pcm16": 16_000, "pcm8": 8_000, "opus": 16_000}


@functools.cache
def clip(name: str) -> bytes:
    """A corpus clip as 16 kHz 16-bit mono PCM."""
    pcm, rate, _ = read_wav((AUDIO / CORPUS[name]["file"]).read_bytes())
    assert rate == RATE
    return pcm


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def _resample(pcm: bytes, rate: int) -> bytes:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = RATE
    out = [*resampler.resample(frame), *resampler.resample(None)]
    return b"".join(np.asarray(f.to_ndarray(), dtype="<i2").tobytes() for f in out)


def opus_packets(pcm: bytes, rate: int = RATE) -> list[bytes]:
    """Raw Opus packets of 20 ms each (PyAV's libopus), one per WebSocket frame."""
    samples = np.frombuffer(pcm, dtype="<i2")
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = rate
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 32_000
    encoder.open()
    step = rate // 50
    packets: list[bytes] = []
    for i in range(0, samples.size - step + 1, step):
        frame = av.AudioFrame.from_ndarray(samples[None, i : i + step], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets


def encode(pcm: bytes, codec: str) -> tuple[list[bytes], float]:
    """``pcm`` (16 kHz) as the frames a client sends in ``codec``, and seconds per frame."""
    if codec == "opus":
        return opus_packets(pcm), 0.02
    data = pcm if codec == "pcm16" else _resample(pcm, RATES[codec])
    step = RATES[codec] // 10 * 2  # 100 ms
    return [data[i : i + step] for i in range(0, len(data), step)], 0.1


def listen_query(codec: str = "pcm16", **extra: str) -> dict[str, str]:
    return {"codec": codec, "sample_rate": str(RATES.get(codec, 16_000)), "language": "en", **extra}


class Listener:
    """An async face on a test-client WebSocket session of ``/listen``."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.messages: list[tuple[float, Any]] = []  # (monotonic arrival time, decoded JSON)
        self.closed: WebSocketDisconnect | None = None

    @property
    def segments(self) -> list[TranscriptSegment]:
        return [TranscriptSegment(**s) for _, m in self.messages if isinstance(m, list) for s in m]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if isinstance(m, dict) and m.get("type") != "ping"]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)

    async def send(self, frames: Sequence[bytes], pace: float | None = None) -> None:
        """Send ``frames``; with ``pace``, one every ``pace`` seconds (real time)."""
        start = time.monotonic()
        for index, frame in enumerate(frames):
            self.ws.send_bytes(frame)
            if pace is not None:
                await anyio.sleep(max(0.0, start + (index + 1) * pace - time.monotonic()))
            elif index % 50 == 0:
                await anyio.lowlevel.checkpoint()

    def _receive(self, timeout: float) -> Any:
        message: dict[str, Any] = dict(self.ws.receive(timeout=timeout))
        text = message.get("text")
        return json.loads(text) if text is not None else message.get("bytes")

    async def receive(self, within: float = 30.0) -> Any:
        """The next message (raises ``WebSocketDisconnect`` on a close, ``Empty`` on timeout)."""
        try:
            message = await anyio.to_thread.run_sync(self._receive, within)
        except WebSocketDisconnect as exc:
            self.closed = exc
            raise
        self.messages.append((time.monotonic(), message))
        return message

    async def until(self, done: Callable[[Listener], bool], within: float = 60.0) -> None:
        """Receive until ``done(self)`` holds."""
        deadline = time.monotonic() + within
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met in {within} s; got {self.messages[-5:]}")
            try:
                await self.receive(within=min(left, 1.0))
            except Empty:
                continue

    async def close_code(self, within: float = 30.0) -> tuple[int, str]:
        """Receive until the server closes; its close code and reason."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                await self.receive(within=1.0)
            except WebSocketDisconnect as exc:
                return exc.code, exc.detail
            except Empty:
                continue
        raise TimeoutError("the server did not close the socket")

    def event_names(self) -> list[str]:
        return [e["type"] for e in self.events]


async def token(api: Api, uid: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await TokenService(api.services.kv).create(uid)}"}


async def memories(api: Api, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await api.client.get("/v1/memories", headers=headers)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


async def wait_for_memories(
    api: Api, headers: dict[str, str], count: int = 1, within: float = 60.0
) -> list[dict[str, Any]]:
    """The user's memories once there are ``count`` of them."""
    deadline = time.monotonic() + within
    while True:
        found = await memories(api, headers)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(found)} memories after {within} s, expected {count}")
        await anyio.sleep(0.2)


def memory_text(memory: dict[str, Any]) -> str:
    return " ".join(s["text"] for s in memory["transcript_segments"])


@asynccontextmanager
async def listen_app(
    tmp_path: Path, embedder: MiniLMEmbedder, engine: SpeechToText = WHISPER, **settings: Any
) -> AsyncIterator[Api]:
    """An app with ``settings`` and speech-to-text ``engine``, with tokens for alice and bob."""
    config = Settings(data_dir=tmp_path / "data", **settings)
    services = embedded_services(config.data_dir, embedder, engine)
    async with AsyncTestClient(app=create_app(config, services=services)) as client:
        tokens = TokenService(services.kv)
        alice = {"Authorization": f"Bearer {await tokens.create('alice')}"}
        bob = {"Authorization": f"Bearer {await tokens.create('bob')}"}
        yield Api(client=client, services=services, alice=alice, bob=bob)

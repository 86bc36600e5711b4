"""The ``/listen`` benchmark server: the real app, optionally on a speech-to-text stand-in.

``BENCH_STT=tick`` replaces the engine with :class:`TickEngine`, which "recognises" one
segment per second of audio received without computing anything, delivered from a task of
its own as real engines do: what is measured is then the server's own cost (decode, journal,
send, plugins dispatch). ``BENCH_STT=mixed`` keeps the real engine for sessions whose
language is ``en`` and gives :class:`TickEngine` the sessions whose language carries the
private-use tag ``-x-tick`` (``en-x-tick``): a few real Whisper sessions and many scripted
ones in one server (bench/soak.py). ``GET /bench/lag`` reports the event loop's lag (how late a 10 ms
sleep wakes up) since the last ``GET /bench/lag?reset=1``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from litestar import get

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings
from app.core.models import TranscriptSegment
from app.core.ports import SegmentsCallback, SpeechStream, SpeechToText
from app.main import build_services, create_app
from app.serving import configure_logging, serve_app

TICK_BYTES = 32_000  # one second of 16 kHz 16-bit audio


class TickStream:
    def __init__(self, on_segments: SegmentsCallback) -> None:
        self.on_segments = on_segments
        self.received = 0
        self.emitted = 0
        self.queue: asyncio.Queue[list[TranscriptSegment] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._deliver())

    async def _deliver(self) -> None:
        while (segments := await self.queue.get()) is not None:
            await self.on_segments(segments)

    async def send(self, pcm: bytes) -> None:
        self.received += len(pcm)
        while self.received >= (self.emitted + 1) * TICK_BYTES:
            second = self.emitted
            self.emitted += 1
            self.queue.put_nowait([TranscriptSegment(text=f"tick {second}", start=second, end=second + 1.0)])

    async def finish(self) -> None:
        self.queue.put_nowait(None)
        await self.task

    async def close(self) -> None:
        self.task.cancel()


class TickEngine:
    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> TickStream:
        return TickStream(on_segments)

    async def close(self) -> None:
        pass


class MixedEngine:
    """The real engine, but ``TickEngine`` for the languages tagged ``-x-tick``."""

    TAG = "-x-tick"

    def __init__(self, real: SpeechToText) -> None:
        self.real = real
        self.tick = TickEngine()

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> SpeechStream:
        if language.lower().endswith(self.TAG):
            return await self.tick.open(language=language, sample_rate=sample_rate, on_segments=on_segments)
        return await self.real.open(language=language, sample_rate=sample_rate, on_segments=on_segments)

    async def close(self) -> None:
        await self.real.close()


_lags: list[float] = []
_monitor: list[asyncio.Task[None]] = []


async def _watch_loop() -> None:
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(0.01)
        _lags.append((loop.time() - start - 0.01) * 1000)


@get("/bench/lag")
async def lag(reset: bool = False) -> dict[str, Any]:
    if not _monitor:
        _monitor.append(asyncio.create_task(_watch_loop()))
    samples = list(_lags)
    if reset:
        _lags.clear()
    if len(samples) < 2:
        return {"n": len(samples)}
    q = statistics.quantiles(samples, n=100)
    return {"n": len(samples), "p50": statistics.median(samples), "p99": q[98], "max": max(samples)}


def main() -> None:
    settings = Settings.from_env()
    configure_logging("warning")
    services = build_services(settings)
    if os.environ.get("BENCH_STT") == "tick":
        services = dataclasses.replace(services, stt=TickEngine())
    elif os.environ.get("BENCH_STT") == "mixed":
        services = dataclasses.replace(services, stt=MixedEngine(services.stt))
    app = create_app(settings, services=services)
    app.register(lag)
    serve_app(app, host="127.0.0.1", port=settings.port, log_level="warning")  # as `omi-backend serve`


if __name__ == "__main__":
    main()

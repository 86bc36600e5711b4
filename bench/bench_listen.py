"""Benchmarks of ``/listen`` (issue 3): server cost per session, and memory after disconnect.

``load`` (a): N concurrent clients, each streaming 100 ms pcm16 frames at real-time pace to
one uvicorn worker whose engine is the no-compute ``TickEngine`` (bench/listen_server.py),
for each N asked: p99 frame-to-segment latency (from sending the frame that completes a second
of audio to receiving that second's segment), frames lost (a missing segment), and the event
loop's lag p99. Passes when p99 < 100 ms, nothing is lost and the lag p99 < 50 ms.

``memory`` (c), with the embedded Whisper engine: a corpus clip streamed at real-time pace;
end of speech -> segment at the client; last frame -> memory stored after a disconnect
(polled through ``GET /v1/memories``); and, with a 1 s silence window and
``new_memory_watch``, the end of speech -> ``new_memory_created`` (minus the window).

Run: ``.venv/bin/python bench/bench_listen.py load 50 100 200 300 [--json]`` (``--json``
writes the sweep to bench/results/listen.json for bench/plots.py) and
``.venv/bin/python bench/bench_listen.py memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS,
    ROOT,
    machine,
    make_token,
    percentiles,
    run_info,
    write_results,
)
from bench.common import server as common_server

FRAME = 3_200  # 100 ms of 16 kHz 16-bit audio
WINDOW_S = 3.0  # OMI_MEMORY_SILENCE_SECONDS of the new_memory_created measurement
AUDIO = ROOT.parent / "shared" / "audio"


def server(data_dir: Path, **env: str) -> AbstractContextManager[str]:
    """bench/listen_server.py; stopping waits up to 10 minutes for the sessions' memories."""
    return common_server(data_dir, "listen_server.py", start_attempts=600, stop_timeout=600, env=env)


class Barrier:
    """Every client keeps its socket open until all have streamed: memories are made after."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.done = asyncio.Event()

    async def arrive(self, arrived: list[bool]) -> None:
        if not arrived:
            arrived.append(True)
            self.left -= 1
            if self.left <= 0:
                self.done.set()
        await self.done.wait()


async def one_client(url: str, token: str, seconds: int, stagger: float, barrier: Barrier) -> dict[str, Any]:
    """Stream ``seconds`` of noise in real time; latency of each second's segment."""
    await asyncio.sleep(stagger)
    arrived: list[bool] = []
    try:
        return await _stream_noise(url, token, seconds, barrier, arrived)
    finally:
        await barrier.arrive(arrived)  # a client that failed must not hold the others up


async def _stream_noise(
    url: str, token: str, seconds: int, barrier: Barrier, arrived: list[bool]
) -> dict[str, Any]:
    frame = (np.random.default_rng(1).normal(0, 300, FRAME // 2)).astype("<i2").tobytes()
    sent: list[float] = []
    latencies: list[float] = []
    query = "codec=pcm16&sample_rate=16000&language=en"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{url}/listen?{query}", additional_headers=headers) as ws:

        async def receive() -> None:
            while len(latencies) < seconds:
                message = json.loads(await ws.recv())
                now = time.perf_counter()
                for segment in message if isinstance(message, list) else []:
                    last_frame = round(segment["end"] * 10) - 1
                    latencies.append((now - sent[last_frame]) * 1000)

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i in range(seconds * 10):
            await asyncio.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
            sent.append(time.perf_counter())
            await ws.send(frame)
        with suppress(TimeoutError):
            await asyncio.wait_for(receiver, 5.0)
        await barrier.arrive(arrived)  # close only once every client has streamed
    return {"latencies": latencies, "lost": seconds - len(latencies)}


async def load_step(url: str, tokens: list[str], seconds: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as http:
        await http.get("/bench/lag", params={"reset": "true"})
        barrier = Barrier(len(tokens))
        ws_url = url.replace("http", "ws")
        clients = [one_client(ws_url, t, seconds, random.uniform(0, 1.0), barrier) for t in tokens]
        measure = asyncio.gather(*clients, return_exceptions=True)
        await barrier.done.wait()
        lag = (await http.get("/bench/lag", params={"reset": "true"})).json()
        results = await measure
    failed = [r for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    latencies = [x for r in ok for x in r["latencies"]]
    lost = sum(r["lost"] for r in ok) + len(failed) * seconds
    return {
        "latency": percentiles(latencies) if len(latencies) > 1 else {},
        "lost": lost,
        "failed": len(failed),
        "lag": lag,
    }


def load(sessions: list[int], seconds: int, out: Path | None) -> None:
    print(f"# /listen server cost ({machine()})")
    print("| sessions | p50 ms | p99 ms | segments lost | loop lag p99 ms | pass |")
    print("|---|---|---|---|---|---|")
    result: dict[str, Any] = {
        "benchmark": "/listen server cost per session (scripted STT), frame -> segment latency",
        "run": run_info(),
        "seconds_per_session": seconds,
        "sweep": [],
    }
    for count in sessions:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            tokens = [make_token(data, f"user{i}") for i in range(count)]
            with server(data, BENCH_STT="tick", OMI_LOG_LEVEL="warning") as url:
                step = asyncio.run(load_step(url, tokens, seconds))
        p99, lag = step["latency"].get("p99", float("inf")), step["lag"].get("p99", float("inf"))
        ok = p99 < 100 and step["lost"] == 0 and lag < 50
        print(
            f"| {count} | {step['latency'].get('p50', 0):.1f} | {p99:.1f} | {step['lost']} | {lag:.1f} | "
            f"{'yes' if ok else 'no'} |",
            flush=True,
        )
        result["sweep"].append({"sessions": count, **step, "pass": ok})
    if out is not None:
        write_results(out, result)


def clip_frames(name: str) -> tuple[list[bytes], float]:
    from app.core.audio import read_wav

    pcm, rate, seconds = read_wav((AUDIO / f"{name}.wav").read_bytes())
    assert rate == 16_000
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)], seconds


async def stream_clip(url: str, token: str, frames: list[bytes], query: str, tail_s: float) -> dict[str, Any]:
    """Frames at real-time pace, then ``tail_s`` of silence; what arrived and when."""
    arrivals: list[tuple[float, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{url}/listen?{query}", additional_headers=headers) as ws:

        async def receive() -> None:
            async for message in ws:
                arrivals.append((time.perf_counter(), json.loads(message)))

        receiver = asyncio.create_task(receive())
        quiet = bytes(FRAME)
        total = frames + [quiet] * int(tail_s * 10)
        start = time.perf_counter()
        for i, frame in enumerate(total):
            await asyncio.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
            await ws.send(frame)
            if any(isinstance(m, dict) and m.get("type") == "new_memory_created" for _, m in arrivals):
                break
        last_frame = time.perf_counter()
        await asyncio.sleep(0.5 if tail_s else 0)
        receiver.cancel()
    return {
        "start": start,
        "speech_end": start + len(frames) * 0.1,
        "last_frame": last_frame,
        "arrivals": arrivals,
    }


async def wait_for_memories(http: httpx.AsyncClient, count: int) -> None:
    while True:
        if len((await http.get("/v1/memories")).json()) >= count:
            return
        await asyncio.sleep(0.02)


async def memory_run(name: str) -> dict[str, Any]:
    frames, seconds = clip_frames(name)
    report: dict[str, Any] = {"clip": name, "seconds": seconds}
    pcm16 = "codec=pcm16&sample_rate=16000"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        warmup, token = [await asyncio.to_thread(make_token, data, uid) for uid in ("warmup", "alice")]
        with server(data, OMI_LOG_LEVEL="warning") as url:
            ws_url = url.replace("http", "ws")
            await stream_clip(ws_url, warmup, frames[:10], pcm16, 0)  # the first stream loads the model
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
                run = await stream_clip(ws_url, token, frames, pcm16, 1.0)
                lags = [
                    t - (run["start"] + s["end"])
                    for t, m in run["arrivals"]
                    if isinstance(m, list)
                    for s in m[-1:]
                ]
                report["segment_lag_s"] = [round(x, 2) for x in lags]
                closed = time.perf_counter()
                await wait_for_memories(http, 1)
                report["last_frame_to_memory_s"] = round(time.perf_counter() - run["last_frame"], 2)
                report["close_to_memory_s"] = round(time.perf_counter() - closed, 2)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        warmup, token = [await asyncio.to_thread(make_token, data, uid) for uid in ("warmup", "alice")]
        with server(data, OMI_LOG_LEVEL="warning", OMI_MEMORY_SILENCE_SECONDS=str(WINDOW_S)) as url:
            ws_url = url.replace("http", "ws")
            await stream_clip(ws_url, warmup, frames[:10], pcm16, 0)
            run = await stream_clip(ws_url, token, frames, f"{pcm16}&new_memory_watch=true", 15.0)
            created = [
                t for t, m in run["arrivals"] if isinstance(m, dict) and m.get("type") == "new_memory_created"
            ]
            ends = [s["end"] for _, m in run["arrivals"] if isinstance(m, list) for s in m]
            arrived = [t for t, m in run["arrivals"] if isinstance(m, list)]
            if created and ends:  # from the end of the last words, less the silence window itself
                report["speech_end_to_new_memory_created_less_window_s"] = round(
                    created[0] - (run["start"] + max(ends)) - WINDOW_S, 2
                )
                report["last_segment_to_new_memory_created_less_window_s"] = round(
                    created[0] - max(arrived) - WINDOW_S, 2
                )
    return report


def memory(names: list[str]) -> None:
    print(f"# /listen memory after the conversation ({machine()})")
    for name in names:
        report = asyncio.run(memory_run(name))
        lags = report.pop("segment_lag_s")
        report["segment_lag_median_s"] = round(statistics.median(lags), 2) if lags else None
        report["segment_lag_max_s"] = max(lags) if lags else None
        print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    load_parser = commands.add_parser("load", help="(a) server cost with the no-compute engine")
    load_parser.add_argument("sessions", type=int, nargs="+")
    load_parser.add_argument("--seconds", type=int, default=10, help="audio per session")
    load_parser.add_argument(
        "--json",
        type=Path,
        nargs="?",
        const=RESULTS / "listen.json",
        help="also write the sweep as JSON (default path: bench/results/listen.json)",
    )
    memory_parser = commands.add_parser("memory", help="(c) latencies with the embedded Whisper engine")
    memory_parser.add_argument("clips", nargs="*", default=["grocery", "standup"])
    args = parser.parse_args()
    if args.command == "load":
        load(args.sessions, args.seconds, args.json)
    else:
        memory(args.clips)


if __name__ == "__main__":
    main()

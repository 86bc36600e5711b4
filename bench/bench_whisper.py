"""Benchmarks of the embedded Whisper engine (issue 3, b): real-time factor, sessions per core.

``rtf``: the engine (``WhisperSpeechToText``, one worker of one CTranslate2 thread, this process
pinned to one core) transcribes each corpus clip of ``/work/shared/audio`` as fast as it can:
all the audio sent in 100 ms chunks, then ``finish()``. RTF = processing time / audio duration,
per clip and overall (total time / total audio). The model is loaded before the clock starts.

``sessions N...``: for each N, a fresh server (bench/listen_server.py, the real app on the
embedded engine with ``OMI_WHISPER_WORKERS=1`` and ``OMI_INFERENCE_THREADS=1``, pinned with
``taskset -c 0``) and N concurrent ``/listen`` clients (this process, pinned to the other
core), each streaming a corpus clip (cycling through them) in 100 ms pcm16 frames at
real-time pace, starting within 1 s of each other, then silence until its last words come
back (or ``--tail`` seconds). Latency of a segment: its arrival at the client minus the end of
its speech (stream start + segment end). Passes when p99 < 3 s and every session got its
last words back. Every client keeps its socket open until all are done, so making the
memories (at disconnect) falls outside the measurement.

Run: ``.venv/bin/python bench/bench_whisper.py rtf`` and
``.venv/bin/python bench/bench_whisper.py sessions 1 2 3 4 6 [--json]`` (``--json`` writes the
sweep to bench/results/whisper.json for bench/plots.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, machine, make_token, run_info, write_results
from bench.common import server as common_server

FRAME = 3_200  # 100 ms of 16 kHz 16-bit audio
AUDIO = ROOT.parent / "shared" / "audio"
LIMIT_S = 3.0  # the p99 target of a segment's latency


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """Inclusive quantiles: with few segments the p99 stays within the samples."""
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": statistics.median(samples_ms), "p90": q[89], "p99": q[98], "n": len(samples_ms)}


def corpus() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads((AUDIO / "corpus.json").read_text())
    return data


def clip_pcm(name: str) -> tuple[bytes, float]:
    from app.core.audio import read_wav

    pcm, rate, seconds = read_wav((AUDIO / corpus()[name]["file"]).read_bytes())
    assert rate == 16_000, f"{name}: {rate} Hz"
    return pcm, seconds


def pin(cpu: int | None) -> str:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- rtf ------------------------------------------------------------------------------------


async def rtf_run(names: list[str], repeat: int) -> list[dict[str, Any]]:
    from app.backends.whisper_stt import WhisperSpeechToText

    engine = WhisperSpeechToText(workers=1, cpu_threads=1)
    try:
        await engine.transcribe_pcm(clip_pcm(names[0])[0][: 32_000 * 2])  # loads the model, warms up
        results = []
        for name in names:
            pcm, seconds = clip_pcm(name)
            best = float("inf")
            words = 0
            for _ in range(repeat):
                found: list[Any] = []

                async def collect(segments: list[Any], found: list[Any] = found) -> None:
                    found.extend(segments)

                start = time.perf_counter()
                stream = await engine.open(language="en", sample_rate=16_000, on_segments=collect)
                try:
                    for offset in range(0, len(pcm), FRAME):
                        await stream.send(pcm[offset : offset + FRAME])
                    await stream.finish()
                finally:
                    await stream.close()
                best = min(best, time.perf_counter() - start)
                words = sum(len(s.text.split()) for s in found)
            results.append({"clip": name, "audio_s": seconds, "time_s": best, "words": words})
        return results
    finally:
        await engine.close()


def rtf(names: list[str], repeat: int, cpu: int | None) -> None:
    pinned = pin(cpu)
    print(f"# embedded Whisper real-time factor ({machine()}; {pinned}; load average {load_average()})")
    results = asyncio.run(rtf_run(names, repeat))
    print("| clip | audio s | processing s | RTF | words | reference words |")
    print("|---|---|---|---|---|---|")
    for r in results:
        reference = len(corpus()[r["clip"]]["text"].split())
        print(
            f"| {r['clip']} | {r['audio_s']:.2f} | {r['time_s']:.2f} | {r['time_s'] / r['audio_s']:.3f} | "
            f"{r['words']} | {reference} |"
        )
    audio = sum(r["audio_s"] for r in results)
    spent = sum(r["time_s"] for r in results)
    print(f"| **all** | {audio:.2f} | {spent:.2f} | **{spent / audio:.3f}** | | |")
    print(f"load average after: {load_average()}")


# -- sessions -------------------------------------------------------------------------------


def server(data_dir: Path, cpu: int | None, **env: str) -> AbstractContextManager[str]:
    """bench/listen_server.py on the embedded engine, pinned to ``cpu`` (faster-whisper's
    INFO on stdout dropped); stopping waits up to 2 minutes for the last memories."""
    return common_server(
        data_dir, "listen_server.py", cpu=cpu, quiet=True, start_attempts=600, stop_timeout=120, env=env
    )


async def one_session(
    url: str, token: str, name: str, stagger: float, tail_s: float, all_done: asyncio.Event, left: list[int]
) -> dict[str, Any]:
    await asyncio.sleep(stagger)
    arrived: list[bool] = []

    def arrive() -> None:
        if not arrived:
            arrived.append(True)
            left[0] -= 1
            if left[0] <= 0:
                all_done.set()

    try:
        return await _stream(url, token, name, tail_s, all_done, arrive)
    finally:
        arrive()  # a session that failed must not hold the others up


async def _stream(
    url: str, token: str, name: str, tail_s: float, all_done: asyncio.Event, arrive: Callable[[], None]
) -> dict[str, Any]:
    pcm, seconds = clip_pcm(name)
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]
    last_words = corpus()[name]["utterances"][-1]["start"] + 0.5  # a segment ending past: the last
    latencies: list[float] = []
    got_last = asyncio.Event()
    query = "codec=pcm16&sample_rate=16000&language=en"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{url}/listen?{query}", additional_headers=headers) as ws:
        start = time.perf_counter()

        async def receive() -> None:
            async for message in ws:
                now = time.perf_counter()
                data = json.loads(message)
                for segment in data if isinstance(data, list) else []:
                    latencies.append(now - (start + segment["end"]))
                    if segment["end"] >= last_words:
                        got_last.set()

        receiver = asyncio.create_task(receive())
        quiet = bytes(FRAME)
        i = 0
        while i < len(frames) + tail_s * 10:
            await asyncio.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
            if i >= len(frames) and got_last.is_set():
                break
            await ws.send(frames[i] if i < len(frames) else quiet)
            i += 1
        arrive()
        with suppress(TimeoutError):  # the others' memories must not be made mid-measurement
            await asyncio.wait_for(all_done.wait(), tail_s + 60)
        receiver.cancel()
    if not got_last.is_set():
        print(f"{name}: last words (a segment ending past {last_words:.2f} s) not back", file=sys.stderr)
    return {"clip": name, "audio_s": seconds, "latencies": latencies, "got_last": got_last.is_set()}


async def sessions_step(url: str, tokens: list[str], names: list[str], tail_s: float) -> list[Any]:
    ws_url = url.replace("http", "ws")
    rng = random.Random(1)
    all_done = asyncio.Event()
    left = [len(tokens)]
    clients = [
        one_session(ws_url, t, names[i % len(names)], rng.uniform(0, 1.0), tail_s, all_done, left)
        for i, t in enumerate(tokens)
    ]
    return list(await asyncio.gather(*clients, return_exceptions=True))


async def warm_up(url: str, token: str) -> None:
    """One short stream so the first session does not pay for loading the model."""
    pcm, _ = clip_pcm("short")
    query = "codec=pcm16&sample_rate=16000&language=en"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{url.replace('http', 'ws')}/listen?{query}", additional_headers=headers) as ws:
        for i in range(0, len(pcm), FRAME * 10):
            await ws.send(pcm[i : i + FRAME * 10])
        for _ in range(15):
            await ws.send(bytes(FRAME * 10))
        with suppress(TimeoutError):
            await asyncio.wait_for(ws.recv(), 20)


def sessions(
    counts: list[int], names: list[str], tail_s: float, server_cpu: int | None, out: Path | None = None
) -> None:
    client_cpu = None if server_cpu is None else (server_cpu + 1) % (os.cpu_count() or 1)
    pinned = pin(client_cpu) if client_cpu != server_cpu else "not pinned"
    print(
        f"# embedded Whisper sessions on one core ({machine()}; server on CPU {server_cpu}, clients {pinned})"
    )
    print(
        "| sessions | segments | p50 s | p90 s | p99 s | max s | last words missing | pass (p99 < 3 s) "
        "| load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    best = 0
    result: dict[str, Any] = {
        "benchmark": "/listen with embedded Whisper on one core: end of speech -> segment latency",
        "run": run_info(),
        "server_cpu": server_cpu,
        "sweep": [],
    }
    for count in counts:
        before = load_average()
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            tokens = [make_token(data, f"user{i}") for i in range(count)]
            warm = make_token(data, "warmup")
            env = {"OMI_LOG_LEVEL": "warning", "OMI_WHISPER_WORKERS": "1", "OMI_INFERENCE_THREADS": "1"}
            with server(data, server_cpu, **env) as url:
                asyncio.run(warm_up(url, warm))
                results = asyncio.run(sessions_step(url, tokens, names, tail_s))
        failed = [r for r in results if isinstance(r, BaseException)]
        ok = [r for r in results if not isinstance(r, BaseException)]
        for r in failed:
            print(f"session failed: {r!r}", file=sys.stderr)
        lat = [x * 1000 for r in ok for x in r["latencies"]]
        missing = sum(not r["got_last"] for r in ok) + len(failed)
        stats = (
            percentiles(lat)
            if len(lat) > 1
            else {"p50": float("nan"), "p90": float("nan"), "p99": float("inf")}
        )
        passed = stats["p99"] < LIMIT_S * 1000 and missing == 0
        if passed:
            best = max(best, count)
        print(
            f"| {count} | {len(lat)} | {stats['p50'] / 1000:.2f} | {stats['p90'] / 1000:.2f} | "
            f"{stats['p99'] / 1000:.2f} | {max(lat, default=float('nan')) / 1000:.2f} | {missing} | "
            f"{'yes' if passed else 'no'} | {before} -> {load_average()} |",
            flush=True,
        )
        row = {"sessions": count, "segments": len(lat), "missing": missing, "pass": passed}
        result["sweep"].append(row | ({"latency": stats} if len(lat) > 1 else {}))
    print(f"largest N that passed: {best}")
    if out is not None:
        write_results(out, result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    names = list(corpus())
    rtf_parser = commands.add_parser("rtf", help="real-time factor on one core")
    rtf_parser.add_argument("clips", nargs="*", default=names)
    rtf_parser.add_argument("--repeat", type=int, default=1, help="runs per clip (the fastest is kept)")
    rtf_parser.add_argument("--cpu", type=int, default=0, help="the core to pin to (-1: none)")
    sessions_parser = commands.add_parser("sessions", help="concurrent real-time sessions on one core")
    sessions_parser.add_argument("counts", type=int, nargs="+")
    sessions_parser.add_argument("--clips", nargs="+", default=names)
    sessions_parser.add_argument(
        "--tail", type=float, default=15.0, help="max seconds of silence after a clip"
    )
    sessions_parser.add_argument("--cpu", type=int, default=0, help="the server's core (-1: none)")
    sessions_parser.add_argument(
        "--json",
        type=Path,
        nargs="?",
        const=RESULTS / "whisper.json",
        help="also write the sweep as JSON (default path: bench/results/whisper.json)",
    )
    args = parser.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    if args.command == "rtf":
        rtf(args.clips, args.repeat, cpu)
    else:
        sessions(args.counts, args.clips, args.tail, cpu, args.json)


if __name__ == "__main__":
    main()

"""Load soak (issue 7, item 4): REST list and create and ``/listen``, together, for a while.

One server process (bench/listen_server.py: the real app on the embedded defaults, with
``BENCH_STT=mixed``) and, from this process, for ``--duration`` seconds (600 by default):

- ``GET /v1/memories?limit=20`` at ``--list-rate`` requests/s and ``POST /v1/memories``
  (a different 5-minute transcript each time) at ``--create-rate`` requests/s, open loop:
  requests leave on a fixed schedule whatever the answers, and a latency runs from the
  scheduled moment, so a slow server shows as latency (or as errors once
  ``--backlog`` seconds' worth of requests are waiting for answers), never as a lower rate;
- ``--whisper-sessions`` ``/listen`` sessions on the real engine (Whisper tiny.en) and
  ``--tick-sessions`` on the scripted engine of bench/listen_server.py (one segment per
  second of audio, no recognition), each streaming corpus clips (/work/shared/audio) as
  100 ms pcm16 frames at real-time pace. When a clip ends the session waits for its last
  segment (scripted: at most 5 s; Whisper: up to 15 s of silence for the clip's last
  words), closes with 1000, and reconnects at once as a new session with the next clip and
  the next user of its pool (users come back only after the 120 s resume window, so every
  connection is a new session that makes its own memory when it ends).

Why both engines in one server: only the real engine shows what Whisper's worker pool, its
buffers and the memories made from real speech do to memory over time, but it keeps up
with about 6 real-time sessions per core (docs/BENCHMARKS.md), far too few to load the
session machinery (sockets, decoding, voice activity, journal, memories at disconnect),
which the scripted engine exercises at hundreds of sessions. The benchmark server routes
each session by its language tag (``en``: Whisper; ``en-x-tick``: scripted).

Default rates, and why they are the largest sustainable together. Each load alone
saturates the machine at a known point (docs/BENCHMARKS.md, quiet machine): GET about 1,000
req/s (one server core, about 1 ms each), POST about 25 req/s (38 ms each), 400 scripted
sessions (both cores, client included: about 0.5 % of a core each), Whisper 6 sessions on a
core of its own (RTF 0.16, so about 20 % of a core each). Here all of them share one server
process, one Python event loop and the same 2 cores with the client (httpx costs the client
about 2-4 ms of CPU per 220 kB list), so each gets a share of the machine and the shares
must add up to well under 2 cores, leaving room for the memories made as sessions end
(about 6 a second at 100 scripted sessions) and for the sampling:

=================  ==========================  =============================
load               default                     CPU, quiet machine (estimate)
=================  ==========================  =============================
Whisper sessions   2 (1/3 of the 6 per core)   0.4 core
scripted sessions  100 (1/4 of 400)            0.5 core (server + client)
GET list           50/s (1/20 of 1,000)        0.15 core (server + client)
POST create        2/s (1/12 of 25)            0.1 core
=================  ==========================  =============================

about 1.2 of the 2 cores (60 %). Measured with this script on the shared VM (one load at a
time, 40 s, load average 3-7 from other jobs, so upper bounds), the server's CPU per unit
was: GET 0.27 % of a core per req/s (client 0.37 %), POST 17 % per req/s, a scripted
session 0.57 % (client 0.44 %), a Whisper session 35 %. ``--scale F`` multiplies all four
loads: the largest sustainable combination on a given machine is the largest F whose run
passes with flat latency percentiles (``--duration 120 --scale 1.5``, ``--scale 2``...).

Every few seconds it samples the server's RSS, open file descriptors, threads, CPU share
and event-loop lag, and at the end judges (bench/soak_eval.py): zero errors, RSS at the end
<= 1.10 x RSS after warm-up (``--warmup``, 120 s by default: the model loads, caches fill,
SQLite's page cache grows), open fds likewise. It writes bench/results/soak.json and
exits 1 when the run fails.

Run: ``.venv/bin/python bench/soak.py`` (600 s) or ``--duration 60`` for a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROOT, Spawned, make_tokens, run_info, wait_until_up, write_results
from bench.soak_eval import Recorder, evaluate, report_lines
from bench.transcripts import create_body

__all__ = ["evaluate", "main"]

LIST = "GET /v1/memories?limit=20"
CREATE = "POST /v1/memories"
TICK = "/listen scripted STT"
WHISPER = "/listen Whisper"
FRAME = 3_200  # 100 ms of 16 kHz 16-bit audio
TICK_BYTES = 32_000  # the scripted engine's segment: one second of audio
TICK_WAIT_S = 5.0  # the most a scripted session waits for its last segment
WHISPER_TAIL_S = 15.0  # the most silence a Whisper session sends while waiting for its last words
AUDIO = ROOT.parent / "shared" / "audio"
LOG_ERROR = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")
LOG_WARNING = re.compile(r"\bWARNING\b")


class Clip:
    """A corpus clip in 100 ms frames, and where its last words start."""

    def __init__(self, name: str, meta: dict[str, Any]) -> None:
        from app.core.audio import read_wav

        pcm, rate, seconds = read_wav((AUDIO / meta["file"]).read_bytes())
        assert rate == 16_000, f"{name}: {rate} Hz"
        self.name = name
        self.seconds = seconds
        self.frames = [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]
        self.ticks = len(pcm) // TICK_BYTES
        self.last_words = float(meta["utterances"][-1]["start"]) + 0.5  # a segment ending past it


def load_clips() -> list[Clip]:
    corpus: dict[str, dict[str, Any]] = json.loads((AUDIO / "corpus.json").read_text())
    return [Clip(name, meta) for name, meta in corpus.items()]


def users_per_slot(clips: list[Clip], window_s: float) -> int:
    """Users a session slot cycles through so that none comes back within the resume window.

    A slot plays the clips in turn, one user per connection: between two sessions of a user
    come the other ``pool - 1`` clips, which must last longer than ``window_s`` plus a margin
    whichever clip the run starts at.
    """
    durations = [c.seconds for c in clips]
    for pool in range(1, 10 * len(durations) * (1 + math.ceil(window_s / sum(durations)))):
        runs = [
            sum(durations[(i + k) % len(durations)] for k in range(pool - 1)) for i in range(len(durations))
        ]
        if min(runs) > window_s + 30:
            return pool
    raise ValueError("no pool is large enough")


# -- the server ------------------------------------------------------------------------------


class Server(Spawned):
    """bench/listen_server.py in a subprocess, its output in a log file."""

    def __init__(self, data: Path, log: Path, env: dict[str, str]) -> None:
        super().__init__(data, "listen_server.py", log=log, env=env)
        self.log = log

    def log_lines(self, pattern: re.Pattern[str]) -> list[str]:
        """The lines of the server's log that match ``pattern`` (LOG_ERROR, LOG_WARNING)."""
        return [line for line in self.log.read_text(errors="replace").splitlines() if pattern.search(line)]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def proc_stats(pid: int) -> dict[str, float]:
    """RSS (MB), threads, open fds and CPU seconds of a process, from /proc."""
    stats: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            stats["rss_mb"] = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            stats["threads"] = int(line.split()[1])
    if "rss_mb" not in stats:  # a zombie: the process has died and not been reaped yet
        raise ProcessLookupError(f"process {pid} has exited")
    stats["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    stats["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return stats


async def sampler(
    server: Server,
    http: httpx.AsyncClient,
    rec: Recorder,
    stop: asyncio.Event,
    every: float,
    samples: list[dict[str, float]],
) -> None:
    """Append a sample every ``every`` seconds until ``stop``: the server's resources, loop lag."""
    await http.get("/bench/lag", params={"reset": "true"})
    before = await asyncio.to_thread(proc_stats, server.proc.pid)
    client_before, wall_before = time.process_time(), time.perf_counter()
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            stats = await asyncio.to_thread(proc_stats, server.proc.pid)
        except OSError as exc:  # /proc/PID is gone: the server died
            rec.error("server", "process gone", f"exit code {server.proc.poll()}: {exc}")
            return
        client, wall = time.process_time(), time.perf_counter()
        sample = {
            "t": round(rec.elapsed(), 1),
            "rss_mb": round(stats["rss_mb"], 1),
            "fds": stats["fds"],
            "threads": stats["threads"],
            "server_cpu_pct": round(100 * (stats["cpu_s"] - before["cpu_s"]) / (wall - wall_before), 1),
            "client_cpu_pct": round(100 * (client - client_before) / (wall - wall_before), 1),
            "load_average": round(os.getloadavg()[0], 2),
        }
        before, client_before, wall_before = stats, client, wall
        try:
            lag = (await http.get("/bench/lag", params={"reset": "true"})).json()
            sample |= {
                "loop_lag_p99_ms": round(lag.get("p99", 0.0), 1),
                "loop_lag_max_ms": lag.get("max", 0.0),
            }
        except (httpx.HTTPError, ValueError) as exc:
            rec.error("GET /bench/lag", type(exc).__name__, str(exc))
        samples.append(sample)
        progress(
            f"{sample['t']:6.0f} s  RSS {sample['rss_mb']:.0f} MB  fds {sample['fds']:.0f}  "
            f"server CPU {sample['server_cpu_pct']:.0f} %  lag p99 {sample.get('loop_lag_p99_ms', '?')} ms  "
            f"done {dict(rec.ok)}  errors {sum(rec.errors.values())}"
        )


# -- REST load -------------------------------------------------------------------------------


async def open_loop(
    rate: float,
    stop: asyncio.Event,
    fire: Callable[[float], Coroutine[Any, Any, None]],
    rec: Recorder,
    route: str,
    max_in_flight: int,
) -> None:
    """Call ``fire(scheduled_time)`` ``rate`` times a second until ``stop``, never waiting for answers."""
    if rate <= 0:
        return
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    i = 0
    while not stop.is_set():
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
            continue
        i += 1
        if len(pending) >= max_in_flight:  # the server has fallen this far behind: not sent
            rec.error(route, "client backlog", f"{len(pending)} requests waiting for an answer")
            continue
        task = asyncio.create_task(fire(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        _, late = await asyncio.wait(pending, timeout=60)
        for task in late:
            rec.error(route, "no answer within 60 s of the end of the load")
            task.cancel()


async def request(
    client: httpx.AsyncClient, rec: Recorder, route: str, due: float, method: str, url: str, **kw: Any
) -> httpx.Response | None:
    """One request; its latency from ``due``, or an error."""
    try:
        response = await client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        rec.error(route, type(exc).__name__, str(exc))
        return None
    if not response.is_success:
        rec.error(route, f"HTTP {response.status_code}", response.text[:300])
        return None
    rec.latency(route, (time.perf_counter() - due) * 1000)
    rec.success(route)
    return response


# -- /listen load ----------------------------------------------------------------------------


class SessionError(Exception):
    """A /listen session went wrong; the message says how."""


async def listen_session(
    ws_url: str, token: str, clip: Clip, whisper: bool, rec: Recorder, stop: asyncio.Event
) -> None:
    """One session: the clip at real-time pace, its last segment back, a normal close (1000)."""
    route = WHISPER if whisper else TICK
    language = "en" if whisper else "en-x-tick"
    query = f"codec=pcm16&sample_rate=16000&language={language}"
    headers = {"Authorization": f"Bearer {token}"}
    sent: list[float] = []
    got: set[int] = set()
    done = asyncio.Event()
    start = time.perf_counter()

    async def receive(ws: ClientConnection) -> None:
        async for message in ws:  # ends at a normal close; raises ConnectionClosedError otherwise
            now = time.perf_counter()
            data = json.loads(message)
            if not isinstance(data, list):
                continue  # pings and memory events
            for segment in data:
                end = float(segment["end"])
                if whisper:  # from the end of the words in the audio
                    rec.latency(route, (now - (start + end)) * 1000)
                    if end >= clip.last_words:
                        done.set()
                    continue
                last_frame = round(end * 10) - 1  # from the frame that completed the second
                if 0 <= last_frame < len(sent):
                    rec.latency(route, (now - sent[last_frame]) * 1000)
                got.add(round(end))
                if len(got) >= clip.ticks:
                    done.set()

    async def stream(ws: ClientConnection) -> None:
        frames = clip.frames + ([bytes(FRAME)] * int(WHISPER_TAIL_S * 10) if whisper else [])
        for i, frame in enumerate(frames):
            if stop.is_set() or (i >= len(clip.frames) and done.is_set()):
                return
            await asyncio.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
            sent.append(time.perf_counter())
            await ws.send(frame)
        if not whisper:
            with suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), TICK_WAIT_S)

    async with connect(f"{ws_url}/listen?{query}", additional_headers=headers, open_timeout=30) as ws:
        start = time.perf_counter()
        receiver = asyncio.create_task(receive(ws))
        try:
            await stream(ws)
        except BaseException:
            receiver.cancel()
            await asyncio.wait({receiver})
            raise
        if receiver.done():  # the server ended the session before the client did
            receiver.result()
            raise SessionError(f"closed by the server: code {ws.close_code} {ws.close_reason}")
        if not done.is_set() and not stop.is_set():
            missing = "last words" if whisper else f"{clip.ticks - len(got)} of {clip.ticks} segments"
            rec.error(route, "segments not back", f"{clip.name}: {missing} missing")
        await ws.close()
        try:
            await asyncio.wait_for(receiver, 10)
        except TimeoutError:
            raise SessionError("the close handshake did not finish within 10 s") from None
    if ws.close_code != 1000:
        raise SessionError(f"close code {ws.close_code} {ws.close_reason}")


async def listen_slot(
    ws_url: str,
    tokens: list[str],
    clips: list[Clip],
    slot: int,
    whisper: bool,
    rec: Recorder,
    stop: asyncio.Event,
) -> None:
    """Sessions one after another until ``stop``: the next clip and the next user each time."""
    route = WHISPER if whisper else TICK
    await asyncio.sleep(slot % 100 * 0.1)  # connections spread over the first 10 s
    n = 0
    while not stop.is_set():
        clip = clips[(slot + n) % len(clips)]
        token = tokens[n % len(tokens)]
        n += 1
        try:
            await listen_session(ws_url, token, clip, whisper, rec, stop)
            rec.success(route)
        except Exception as exc:  # SessionError, ConnectionClosed, OSError, TimeoutError...
            rec.error(route, type(exc).__name__, str(exc))
            await asyncio.sleep(1.0)  # do not spin against a failing server


async def warm_up(ws_url: str, token: str, clips: list[Clip]) -> None:
    """One Whisper session of the short clip, so the first measured ones do not load the model."""
    short = min(clips, key=lambda c: c.seconds)
    rec = Recorder()
    await listen_session(ws_url, token, short, True, rec, asyncio.Event())
    if rec.errors:
        raise RuntimeError(f"the warm-up session failed: {dict(rec.errors)}")


# -- the run ---------------------------------------------------------------------------------


async def drive(
    args: argparse.Namespace, server: Server, tokens: dict[str, Any], clips: list[Clip]
) -> dict[str, Any]:
    rec = Recorder(bucket_s=args.bucket)
    stop = asyncio.Event()
    url, ws_url = server.url, server.url.replace("http://", "ws://")
    # Idle connections are dropped before uvicorn's 5 s keep-alive ends: a request sent on a
    # connection the server is closing would fail, and count as an error of the server's.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    headers = {"Authorization": f"Bearer {tokens['reader']}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as reader,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {tokens['writer']}"}, limits=limits, timeout=60
        ) as writer,
        httpx.AsyncClient(base_url=url, timeout=10) as probe,
    ):
        progress("server up; seeding 40 memories for the list")
        for seed in range(40):  # the list returns 20 memories with 5-minute transcripts
            (await reader.post("/v1/memories", json=create_body(seed))).raise_for_status()
        if args.whisper_sessions:
            progress("warming Whisper up (one session of the short clip)")
            await warm_up(ws_url, tokens["warmup"], clips)
        progress(f"load starts for {args.duration:g} s")
        seeds = iter(range(1_000, 10**9))

        async def get_list(due: float) -> None:
            response = await request(reader, rec, LIST, due, "GET", "/v1/memories", params={"limit": 20})
            if response is not None and not (response.content[:1] == b"[" and response.content[-1:] == b"]"):
                rec.error(LIST, "not a JSON array", response.text[:200])

        async def post_create(due: float) -> None:
            response = await request(
                writer, rec, CREATE, due, "POST", "/v1/memories", json=create_body(next(seeds))
            )
            if response is not None and "id" not in response.json().get("memory", {}):
                rec.error(CREATE, "no id in the answer", response.text[:200])

        def backlog(rate: float) -> int:
            return max(4, math.ceil(rate * float(args.backlog)))

        rec.start()
        samples: list[dict[str, float]] = []
        sampling = asyncio.create_task(sampler(server, probe, rec, stop, args.sample_every, samples))
        tasks: list[asyncio.Task[Any]] = [
            sampling,
            asyncio.create_task(
                open_loop(args.list_rate, stop, get_list, rec, LIST, backlog(args.list_rate))
            ),
            asyncio.create_task(
                open_loop(args.create_rate, stop, post_create, rec, CREATE, backlog(args.create_rate))
            ),
        ]
        for slot in range(args.tick_sessions):
            tasks.append(
                asyncio.create_task(listen_slot(ws_url, tokens["tick"][slot], clips, slot, False, rec, stop))
            )
        for slot in range(args.whisper_sessions):
            tasks.append(
                asyncio.create_task(
                    listen_slot(ws_url, tokens["whisper"][slot], clips, slot, True, rec, stop)
                )
            )
        await asyncio.sleep(args.duration)
        stop.set()
        progress("load stops; waiting for the last requests and sessions")
        finished, unfinished = await asyncio.wait(tasks, timeout=90)
        for task in unfinished:
            rec.error("client", "a load task did not stop within 90 s")
            task.cancel()
        for task in finished:
            if task.exception() is not None:
                rec.error("client", "a load task failed", repr(task.exception()))
    return {"recorder": rec, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the memory baseline")
    parser.add_argument("--list-rate", type=float, default=50.0, help="GET /v1/memories?limit=20 per second")
    parser.add_argument("--create-rate", type=float, default=2.0, help="POST /v1/memories per second")
    parser.add_argument("--tick-sessions", type=int, default=100, help="concurrent scripted-STT sessions")
    parser.add_argument("--whisper-sessions", type=int, default=2, help="concurrent Whisper sessions")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the four loads above")
    parser.add_argument(
        "--backlog",
        type=float,
        default=5.0,
        help="seconds of requests waiting for answers before one is an error",
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between server samples")
    parser.add_argument("--bucket", type=float, default=60.0, help="seconds per latency bucket")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json", help="where the results go")
    parser.add_argument("--log", type=Path, help="write the server's log here (default: a temporary file)")
    args = parser.parse_args()
    args.list_rate *= args.scale
    args.create_rate *= args.scale
    args.tick_sessions = round(args.tick_sessions * args.scale)
    args.whisper_sessions = round(args.whisper_sessions * args.scale)
    warmup = args.warmup if args.duration >= 3 * args.warmup else args.duration / 3
    window = min(30.0, warmup / 2, (args.duration - warmup) / 2)
    info = run_info()
    clips = load_clips()
    silence = float(os.environ.get("OMI_MEMORY_SILENCE_SECONDS", "120"))
    pool = users_per_slot(clips, silence)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        names = ["reader", "writer", "warmup"]
        names += [f"tick{s}-{u}" for s in range(args.tick_sessions) for u in range(pool)]
        names += [f"whisper{s}-{u}" for s in range(args.whisper_sessions) for u in range(pool)]
        progress(f"making {len(names)} tokens ({pool} users per session slot)")
        made = dict(zip(names, make_tokens(data, names), strict=True))
        tokens: dict[str, Any] = {k: made[k] for k in ("reader", "writer", "warmup")}
        for kind, count in (("tick", args.tick_sessions), ("whisper", args.whisper_sessions)):
            tokens[kind] = [[made[f"{kind}{s}-{u}"] for u in range(pool)] for s in range(count)]
        env = {"BENCH_STT": "mixed" if args.whisper_sessions else "tick", "OMI_LOG_LEVEL": "warning"}
        server = Server(data, args.log or data / "server.log", env)
        try:
            wait_until_up(server.url, attempts=600)
            outcome = asyncio.run(drive(args, server, tokens, clips))
        finally:
            progress("stopping the server (it makes the memories of the last sessions)")
            exit_code = server.stop(timeout=180.0)
        rec: Recorder = outcome["recorder"]
        log_errors = server.log_lines(LOG_ERROR)
        log_warnings = server.log_lines(LOG_WARNING)
        for line in log_errors:
            rec.error("server log", "error line", line)
        if exit_code not in (0, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM it handled
            rec.error("server", "did not stop cleanly", f"exit code {exit_code}")
    samples = outcome["samples"]
    verdict = evaluate(rec.errors, samples, warmup, window)
    result = {
        "benchmark": "soak: GET and POST /v1/memories and /listen together, one server",
        "run": info,
        "config": {
            "duration_s": args.duration,
            "warmup_s": warmup,
            "window_s": window,
            "list_rate": args.list_rate,
            "create_rate": args.create_rate,
            "tick_sessions": args.tick_sessions,
            "whisper_sessions": args.whisper_sessions,
            "scale": args.scale,
            "users_per_slot": pool,
            "sample_every_s": args.sample_every,
            "bucket_s": args.bucket,
            "server": "bench/listen_server.py " + " ".join(f"{k}={v}" for k, v in env.items()),
        },
        "completed": dict(rec.ok),
        "latency_ms_after_warmup": rec.totals(since_s=warmup),
        "latency_ms_by_bucket": rec.by_bucket(),
        "samples": samples,
        "errors": dict(rec.errors),
        "error_examples": rec.examples,
        "server": {
            "exit_code": exit_code,
            "log_errors": len(log_errors),
            "log_warnings": len(log_warnings),  # not errors; the first few, to read
            "log_warning_examples": log_warnings[:10],
        },
        "evaluation": verdict,
    }
    write_results(args.json, result)
    print_summary(result)
    sys.exit(0 if verdict["pass"] else 1)


def print_summary(result: dict[str, Any]) -> None:
    config, samples = result["config"], result["samples"]
    print(f"# soak ({result['run']['machine']}, {result['run']['date']})")
    print(
        f"{config['duration_s']:.0f} s: GET {config['list_rate']}/s, POST {config['create_rate']}/s, "
        f"{config['tick_sessions']} scripted + {config['whisper_sessions']} Whisper /listen sessions"
    )
    print(f"completed: {result['completed']}")
    for route, stats in result["latency_ms_after_warmup"].items():
        print(f"  {route}: {stats}")
    if samples:
        cpu = [s["server_cpu_pct"] for s in samples]
        client = [s["client_cpu_pct"] for s in samples]
        print(
            f"server CPU {min(cpu):.0f}-{max(cpu):.0f} % (mean {sum(cpu) / len(cpu):.0f} %), "
            f"client CPU mean {sum(client) / len(client):.0f} %, "
            f"RSS {samples[0]['rss_mb']:.0f} -> {samples[-1]['rss_mb']:.0f} MB, "
            f"fds {samples[0]['fds']:.0f} -> {samples[-1]['fds']:.0f}"
        )
    for kind, count in result["errors"].items():
        print(f"  error: {kind} x {count}")
    for example in result["error_examples"][:10]:
        print(f"    {example}")
    print("\n".join(report_lines(result["evaluation"])))


if __name__ == "__main__":
    main()

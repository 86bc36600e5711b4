"""Benchmark (c): POST /v1/memories/search at 10,000 memories for one user.

Seeds the memories in-process through the real pipeline (short conversations, so seeding
takes minutes, not hours), then serves them with uvicorn and times distinct queries (no
query repeats, so the embedder's cache never answers). Target: p50 <= 10 ms.
Run: ``.venv/bin/python bench/bench_search.py [--memories 10000]``. A sweep seeds once, up
to each count in turn, and measures at each on a fresh server: ``--memories 1000 2000 5000
10000 20000 --json`` (writes bench/results/search.json for bench/plots.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, make_token, percentiles, run_info, server, write_results
from bench.transcripts import conversation, sentences


async def seed(data: Path, count: int, first: int = 0) -> None:
    """Memories ``first`` to ``count - 1`` for the user ``bench``, through the real pipeline."""
    from app.config import Settings
    from app.core.models import CreateMemory, TranscriptSegment, utcnow
    from app.core.pipeline import MemoryPipeline
    from app.main import build_services

    services = build_services(Settings(data_dir=data))

    class NoPlugins:
        async def on_memory_processing(self, uid: str, memory: object) -> list[object]:
            return []

        async def on_memory_created(self, uid: str, memory: object) -> list[object]:
            return []

    pipeline = MemoryPipeline(services, NoPlugins())  # type: ignore[arg-type]
    now = utcnow()
    try:
        for i in range(first, count):
            segments = [TranscriptSegment(**s) for s in conversation(i, words=40)]
            request = CreateMemory(started_at=now, finished_at=now, transcript_segments=segments)
            await pipeline.create("bench", request, trigger_integrations=False)
            if i % 1000 == 999:
                print(f"seeded {i + 1}", file=sys.stderr)
    finally:
        await services.close()


def queries(n: int) -> list[str]:
    rng = random.Random(7)
    pool = [s.split() for s in sentences()]
    seen: set[str] = set()
    while len(seen) < n:
        words = rng.choice(pool)
        k = rng.randint(3, min(8, len(words)))
        i = rng.randint(0, len(words) - k)
        seen.add(
            " ".join(words[i : i + k]).strip(".,?").lower()
            + f" {rng.choice(['today', 'plan', 'notes', 'again', 'soon'])}"
        )
    return sorted(seen)


def measure(data: Path, token: str, qs: list[str]) -> list[float]:
    """Milliseconds of each query after the first 20 (warm-up), over HTTP to a fresh server."""
    with (
        server(data) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        samples = []
        for i, q in enumerate(qs):
            start = time.perf_counter()
            response = c.post("/v1/memories/search", json={"query": q, "limit": 10})
            elapsed = (time.perf_counter() - start) * 1000
            response.raise_for_status()
            assert len(response.json()) == 10
            if i >= 20:
                samples.append(elapsed)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--memories", type=int, nargs="+", default=[10_000], help="one count, or several for a sweep"
    )
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--json", type=Path, nargs="?", const=RESULTS / "search.json", help="also write the results as JSON"
    )
    args = parser.parse_args()
    info = run_info()
    sweep: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        token = make_token(data, "bench")
        qs = queries(args.queries + 20)
        seeded, seeding = 0, 0.0
        for count in sorted(set(args.memories)):
            started = time.perf_counter()
            asyncio.run(seed(data, count, first=seeded))
            seeding += time.perf_counter() - started
            seeded = count
            samples = measure(data, token, qs)
            step = {"memories": count, "ms": percentiles(samples), "seeding_s": round(seeding, 1)}
            print(json.dumps(step), file=sys.stderr, flush=True)
            sweep.append(step)
    last = sweep[-1]
    result: dict[str, Any] = {
        "benchmark": f"POST /v1/memories/search, {last['memories']} memories, limit 10",
        "ms": last["ms"],
        "seeding_s": last["seeding_s"],
        "machine": machine(),
    }
    if len(sweep) > 1:
        result["sweep"] = sweep
    print(json.dumps(result, indent=2))
    if args.json is not None:
        result["benchmark"] = "POST /v1/memories/search, limit 10, against the number of memories"
        write_results(args.json, {**result, "sweep": sweep, "queries": args.queries, "run": info})


if __name__ == "__main__":
    main()

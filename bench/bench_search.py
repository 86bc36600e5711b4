"""Benchmark (c): POST /v1/memories/search at 10,000 memories for one user.

Seeds the memories in-process through the real pipeline (short conversations, so seeding
takes minutes, not hours), then serves them with uvicorn and times distinct queries (no
query repeats, so the embedder's cache never answers). Target: p50 <= 10 ms.
Run: ``.venv/bin/python bench/bench_search.py [--memories 10000]``.
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, make_token, percentiles, server
from bench.transcripts import conversation, sentences


async def seed(data: Path, count: int) -> None:
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
        for i in range(count):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        started = time.perf_counter()
        asyncio.run(seed(data, args.memories))
        seeding = time.perf_counter() - started
        token = make_token(data, "bench")
        qs = queries(args.queries + 20)
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
    result = {
        "benchmark": f"POST /v1/memories/search, {args.memories} memories, limit 10",
        "ms": percentiles(samples),
        "seeding_s": round(seeding, 1),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

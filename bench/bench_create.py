"""Benchmark (b): POST /v1/memories with a 5-minute transcript on the embedded defaults.

Target: p50 <= 50 ms after warm-up. Run: ``.venv/bin/python bench/bench_create.py [--json]``
(``--json`` also writes the result to bench/results/create.json). :func:`create_rps` (the
requests per second at a given concurrency) is used by ``bench_list.py --with-create``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, make_token, percentiles, run_info, server, write_results
from bench.transcripts import create_body


async def create_rps(url: str, token: str, connections: int, seconds: float, first_seed: int) -> float:
    """Closed loop: ``connections`` clients POST distinct 5-minute transcripts for ``seconds``.

    Every body is different (seeds from ``first_seed`` on), so the embedder's cache never
    answers. Bodies are made before the clock starts. Raises on any non-2xx answer.
    """
    bodies = [json.dumps(create_body(seed)).encode() for seed in range(first_seed, first_seed + 40)]
    seeds = itertools.count()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=connections)
    done = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                i = next(seeds)  # a distinct transcript: the seed's body with its request number
                body = bodies[i % len(bodies)].replace(b'"text": "', f'"text": "{i} '.encode(), 1)
                response = await client.post("/v1/memories", content=body)
                response.raise_for_status()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--json", type=Path, nargs="?", const=RESULTS / "create.json", help="also write the result as JSON"
    )
    args = parser.parse_args()
    info = run_info()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        token = make_token(data, "bench")
        headers = {"Authorization": f"Bearer {token}"}
        bodies = [create_body(seed) for seed in range(args.warmup + args.requests)]
        words = sum(len(s["text"].split()) for s in bodies[0]["transcript_segments"])
        with server(data) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            samples = []
            for i, body in enumerate(bodies):
                start = time.perf_counter()
                response = client.post("/v1/memories", json=body)
                elapsed = (time.perf_counter() - start) * 1000
                response.raise_for_status()
                if i >= args.warmup:
                    samples.append(elapsed)
    result: dict[str, Any] = {
        "benchmark": "POST /v1/memories, 5-minute transcript",
        "words": words,
        "ms": percentiles(samples),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        write_results(args.json, {**result, "run": info})


if __name__ == "__main__":
    main()

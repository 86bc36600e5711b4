"""Benchmark (b): POST /v1/memories with a 5-minute transcript on the embedded defaults.

Target: p50 <= 50 ms after warm-up. Run: ``.venv/bin/python bench/bench_create.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, make_token, percentiles, server
from bench.transcripts import create_body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
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
    result = {
        "benchmark": "POST /v1/memories, 5-minute transcript",
        "words": words,
        "ms": percentiles(samples),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

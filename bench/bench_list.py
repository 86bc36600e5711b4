"""Benchmark (a): GET /v1/memories?limit=20 (memories with 5-minute transcripts) under load.

Served by uvicorn (one process); compared, in requests per second, with a bare Litestar route
in the same process returning the same bytes. Load comes from ``wrk`` (Debian package
``wrk``) on the other core. Target: ratio >= 0.5.
Run: ``.venv/bin/python bench/bench_list.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, make_token, server
from bench.transcripts import create_body


def wrk(url: str, token: str | None, seconds: int, connections: int) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(out)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        token = make_token(data, "bench")
        bare_file = data / "bare.json"
        with server(data, BENCH_BARE_FILE=str(bare_file)) as url:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                for seed in range(40):
                    c.post("/v1/memories", json=create_body(seed)).raise_for_status()
                body = c.get("/v1/memories?limit=20").content
            bare_file.write_bytes(body)
            api, bare = [], []
            for _ in range(args.rounds):
                api.append(wrk(f"{url}/v1/memories?limit=20", token, args.seconds, args.connections))
                bare.append(wrk(f"{url}/bench/bare", None, args.seconds, args.connections))
    result = {
        "benchmark": "GET /v1/memories?limit=20 vs bare Litestar route, same bytes",
        "response_bytes": len(body),
        "api_rps": api,
        "bare_rps": bare,
        "ratio": round(sum(api) / sum(bare), 3),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

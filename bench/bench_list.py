"""Benchmark (a): GET /v1/memories?limit=20 (memories with 5-minute transcripts) under load.

Served by uvicorn (one process); compared, in requests per second, with a bare Litestar route
in the same process returning the same bytes. Load comes from ``wrk`` (Debian package
``wrk``) on the other core. Target: ratio >= 0.5.

Sweep: ``--connections 1 4 16 64`` measures each concurrency in turn; ``--with-create`` adds
``POST /v1/memories`` (5-minute transcripts, all different, from an async httpx client:
wrk would repeat one body and the embedder's cache would answer) at the same concurrencies;
``--json`` writes everything to bench/results/rest.json for bench/plots.py.
Run: ``.venv/bin/python bench/bench_list.py`` (one concurrency, 16 connections) or
``.venv/bin/python bench/bench_list.py --connections 1 4 16 64 --with-create --json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_create import create_rps
from bench.common import RESULTS, machine, make_tokens, run_info, server, write_results
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[16], help="one or more concurrencies")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--with-create", action="store_true", help="also POST /v1/memories at each concurrency"
    )
    parser.add_argument(
        "--json", type=Path, nargs="?", const=RESULTS / "rest.json", help="also write the results as JSON"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    info = run_info()
    sweep: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        token, writer = make_tokens(data, ["bench", "writer"])
        bare_file = data / "bare.json"
        with server(data, env={"BENCH_BARE_FILE": str(bare_file)}) as url:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                for seed in range(40):
                    c.post("/v1/memories", json=create_body(seed)).raise_for_status()
                body = c.get("/v1/memories?limit=20").content
            bare_file.write_bytes(body)
            for connections in args.connections:
                api: list[float] = []
                bare: list[float] = []
                create: list[float] = []
                for round_ in range(args.rounds):
                    api.append(wrk(f"{url}/v1/memories?limit=20", token, args.seconds, connections))
                    bare.append(wrk(f"{url}/bench/bare", None, args.seconds, connections))
                    if args.with_create:
                        seed = 1000 * (len(sweep) * args.rounds + round_ + 1)
                        create.append(asyncio.run(create_rps(url, writer, connections, args.seconds, seed)))
                step: dict[str, Any] = {
                    "connections": connections,
                    "list_rps": api,
                    "bare_rps": bare,
                    "ratio": round(sum(api) / sum(bare), 3),
                }
                if create:
                    step["create_rps"] = create
                print(json.dumps(step), file=sys.stderr, flush=True)
                sweep.append(step)
    first = sweep[0]
    result = {
        "benchmark": "GET /v1/memories?limit=20 vs bare Litestar route, same bytes",
        "response_bytes": len(body),
        "connections": first["connections"],
        "api_rps": first["list_rps"],
        "bare_rps": first["bare_rps"],
        "ratio": first["ratio"],
        "machine": machine(),
    }
    if len(sweep) > 1 or args.with_create:
        result["sweep"] = sweep
    print(json.dumps(result, indent=2))
    if args.json is not None:
        write_results(
            args.json,
            {**result, "sweep": sweep, "seconds": args.seconds, "rounds": args.rounds, "run": info},
        )


if __name__ == "__main__":
    main()

"""What bench/soak.py records, and its verdict: errors, latency per route per minute, memory.

Kept apart from the load driver (no sockets here) so that the pass/fail rules can be checked
on sample data (tests/unit/test_bench_plots.py).

Pass criteria:

1. zero errors: non-2xx answers, exceptions (timeouts, refused connections), ``/listen``
   sessions that the server closed or that ended with a close code other than 1000, segments
   that never came back, requests the client could not send because too many were waiting
   for an answer, errors in the server's log, a server that did not stop cleanly;
2. RSS at the end <= 1.10 x RSS after warm-up: each is the median of the samples in a
   window (``window_s``) ending at the end of the warm-up and at the end of the run (a
   median, so that one transient peak, e.g. Whisper's buffers, does not decide);
3. open file descriptors at the end <= 1.10 x those after warm-up + 20 (the same windows;
   the slack covers sockets that are between a close and a reconnect).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

RSS_GROWTH_LIMIT = 0.10
FD_GROWTH_LIMIT = 0.10
FD_SLACK = 20
EXAMPLES_PER_KIND = 3  # the first few of each kind of error are kept, with when they happened


def summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99 and max of some latencies (inclusive quantiles; empty: n only)."""
    if not samples_ms:
        return {"n": 0}
    if len(samples_ms) == 1:
        only = float(samples_ms[0])
        return {"n": 1, "p50": only, "p90": only, "p99": only, "max": only}
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "n": len(samples_ms),
        "p50": round(statistics.median(samples_ms), 2),
        "p90": round(q[89], 2),
        "p99": round(q[98], 2),
        "max": round(max(samples_ms), 2),
    }


class Recorder:
    """Latencies per route per time bucket, successes per route, and every error by kind."""

    def __init__(self, bucket_s: float = 60.0) -> None:
        self.t0 = time.perf_counter()
        self.bucket_s = bucket_s
        self.latencies: dict[str, dict[int, list[float]]] = {}
        self.ok: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: list[str] = []

    def start(self) -> None:
        """The clock of the run starts now (setup before it is not counted)."""
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def latency(self, route: str, ms: float) -> None:
        bucket = int(self.elapsed() // self.bucket_s)
        self.latencies.setdefault(route, {}).setdefault(bucket, []).append(ms)

    def success(self, route: str) -> None:
        self.ok[route] += 1

    def error(self, route: str, kind: str, detail: str = "") -> None:
        key = f"{route}: {kind}"
        self.errors[key] += 1
        if self.errors[key] <= EXAMPLES_PER_KIND:
            self.examples.append(f"{self.elapsed():.1f}s {route}: {kind} {detail[:300]}".rstrip())

    def by_bucket(self) -> list[dict[str, Any]]:
        """Per time bucket: its start (s) and each route's latency summary."""
        buckets = sorted({b for per in self.latencies.values() for b in per})
        return [
            {
                "bucket": b,
                "start_s": b * self.bucket_s,
                "routes": {route: summary(per.get(b, [])) for route, per in sorted(self.latencies.items())},
            }
            for b in buckets
        ]

    def totals(self, since_s: float = 0.0) -> dict[str, dict[str, float]]:
        """Each route's latency summary over the buckets that start at or after ``since_s``."""
        first = int(since_s // self.bucket_s)
        return {
            route: summary([x for b, values in per.items() if b >= first for x in values])
            for route, per in sorted(self.latencies.items())
        }


def _window_median(
    samples: Sequence[Mapping[str, float]], key: str, start: float, end: float
) -> float | None:
    values = [s[key] for s in samples if start <= s["t"] <= end]
    return statistics.median(values) if values else None


def _slope_per_minute(samples: Sequence[Mapping[str, float]], key: str, since: float) -> float | None:
    """Least-squares slope of ``key`` per minute over the samples from ``since`` on."""
    points = [(s["t"] / 60, s[key]) for s in samples if s["t"] >= since]
    if len(points) < 3:
        return None
    slope, _ = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    return slope


def evaluate(
    errors: Mapping[str, int],
    samples: Sequence[Mapping[str, float]],
    warmup_s: float,
    window_s: float,
) -> dict[str, Any]:
    """The verdict of a soak run (see the module docstring).

    Args:
        errors: Error counts by kind.
        samples: The server's samples, each with ``t`` (seconds since the start of the load),
            ``rss_mb`` and ``fds``, in time order.
        warmup_s: The end of the warm-up.
        window_s: The length of the windows whose means are compared.
    """
    total = sum(errors.values())
    criteria: list[dict[str, Any]] = [
        {"name": "zero errors", "value": total, "limit": 0, "pass": total == 0},
    ]
    end = samples[-1]["t"] if samples else 0.0
    result: dict[str, Any] = {"errors": total, "warmup_s": warmup_s, "window_s": window_s}
    if end - window_s < warmup_s:
        criteria.append(
            {
                "name": "memory: a run longer than warm-up + one window",
                "value": end,
                "limit": warmup_s + window_s,
                "pass": False,
            }
        )
        return result | {"criteria": criteria, "pass": False}
    rss_warm = _window_median(samples, "rss_mb", warmup_s - window_s, warmup_s)
    rss_end = _window_median(samples, "rss_mb", end - window_s, end)
    fds_warm = _window_median(samples, "fds", warmup_s - window_s, warmup_s)
    fds_end = _window_median(samples, "fds", end - window_s, end)
    if rss_warm is None or rss_end is None or fds_warm is None or fds_end is None:
        criteria.append({"name": "samples in both windows", "value": 0, "limit": 1, "pass": False})
        return result | {"criteria": criteria, "pass": False}
    growth = rss_end / rss_warm - 1
    fd_limit = fds_warm * (1 + FD_GROWTH_LIMIT) + FD_SLACK
    criteria += [
        {
            "name": f"RSS at the end <= {1 + RSS_GROWTH_LIMIT:.2f} x RSS after warm-up",
            "value": round(rss_end / rss_warm, 4),
            "limit": 1 + RSS_GROWTH_LIMIT,
            "pass": growth <= RSS_GROWTH_LIMIT,
        },
        {
            "name": f"open fds at the end <= {1 + FD_GROWTH_LIMIT:.2f} x after warm-up + {FD_SLACK}",
            "value": round(fds_end, 1),
            "limit": round(fd_limit, 1),
            "pass": fds_end <= fd_limit,
        },
    ]
    result |= {
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth": round(growth, 4),
        "rss_peak_mb": round(max(s["rss_mb"] for s in samples), 1),
        "rss_slope_mb_per_min_after_warmup": _round(_slope_per_minute(samples, "rss_mb", warmup_s)),
        "fds_after_warmup": round(fds_warm, 1),
        "fds_end": round(fds_end, 1),
    }
    return result | {"criteria": criteria, "pass": all(c["pass"] for c in criteria)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def report_lines(evaluation: Mapping[str, Any]) -> list[str]:
    """The verdict as text, one criterion a line."""
    lines = [
        f"  [{'pass' if c['pass'] else 'FAIL'}] {c['name']}: {c['value']} (limit {c['limit']})"
        for c in evaluation["criteria"]
    ]
    return [*lines, f"soak: {'PASS' if evaluation['pass'] else 'FAIL'}"]

"""bench/plots.py draws every figure from result files, and bench/soak.py judges a soak rightly.

The figures are drawn from small synthetic results shaped as the benchmark scripts write
them, and decoded again to check they are whole PNG images. The soak's verdict is checked on
sample data: memory growth over and under the 10 % limit, one error, leaking file
descriptors, a run too short to judge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from bench import plots
from bench.soak import LOG_ERROR, Clip, evaluate, users_per_slot
from bench.soak_eval import Recorder, report_lines

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN = {"machine": "2 cores, test CPU, Python 3.11", "date": "2026-11-24T01:00:00+00:00"}


def _pct(p50: float) -> dict[str, float]:
    return {"p50": p50, "p90": p50 * 2, "p99": p50 * 3, "n": 100}


def listen_result() -> dict[str, Any]:
    sweep = [
        {
            "sessions": n,
            "latency": _pct(n / 50),
            "lost": 0,
            "failed": 0,
            "lag": {"p99": n / 20},
            "pass": n < 500,
        }
        for n in (50, 100, 200, 400, 500)
    ]
    return {"run": RUN, "sweep": sweep}


def whisper_result() -> dict[str, Any]:
    sweep = [
        {"sessions": n, "segments": 10 * n, "missing": 0, "pass": n <= 6, "latency": _pct(600.0 * n)}
        for n in (1, 2, 4, 6, 8)
    ]
    return {"run": RUN, "sweep": sweep}


def rest_result() -> dict[str, Any]:
    sweep = [
        {
            "connections": c,
            "list_rps": [900.0 + c, 950.0 + c],
            "bare_rps": [3000.0, 3200.0],
            "ratio": 0.3,
            "create_rps": [20.0, 24.0],
        }
        for c in (1, 4, 16, 64)
    ]
    return {"run": RUN, "sweep": sweep}


def search_result() -> dict[str, Any]:
    sweep = [
        {"memories": m, "ms": _pct(5 + m / 2000), "seeding_s": m / 40} for m in (1000, 2000, 5000, 10000)
    ]
    return {"run": RUN, "sweep": sweep}


def samples(rss_end: float, fds_end: float = 100, minutes: float = 10) -> list[dict[str, float]]:
    """A sample every 5 s; RSS 100 MB after warm-up (2 min), rising linearly to ``rss_end``."""
    out = []
    end = minutes * 60
    for i in range(1, int(end / 5) + 1):
        t = i * 5.0
        share = max(0.0, (t - 120) / max(end - 120, 1.0))
        out.append({"t": t, "rss_mb": 100 + (rss_end - 100) * share, "fds": 100 + (fds_end - 100) * share})
    return out


def soak_result() -> dict[str, Any]:
    rec = Recorder(bucket_s=60)
    for bucket in range(10):
        for route in ("GET /v1/memories?limit=20", "POST /v1/memories", "/listen scripted STT"):
            rec.latencies.setdefault(route, {})[bucket] = [5.0 + bucket, 8.0, 20.0]
    data = samples(105)
    return {
        "run": RUN,
        "config": {
            "duration_s": 600,
            "warmup_s": 120,
            "bucket_s": 60,
            "list_rate": 50,
            "create_rate": 2,
            "tick_sessions": 100,
            "whisper_sessions": 2,
        },
        "samples": data,
        "latency_ms_by_bucket": rec.by_bucket(),
        "evaluation": evaluate({}, data, 120, 30),
    }


def assert_png(path: Path, min_width: int) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 15_000  # axes, lines and text, not an empty canvas
    pixels = imread(path)  # decodes the whole image
    height, width = pixels.shape[:2]
    assert width >= min_width
    assert height >= 400
    assert pixels.std() > 0.05  # not one flat colour


def test_every_figure_is_drawn_from_the_result_files(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for name, data in {
        "listen.json": listen_result(),
        "whisper.json": whisper_result(),
        "rest.json": rest_result(),
        "search.json": search_result(),
        "soak.json": soak_result(),
    }.items():
        (results / name).write_text(json.dumps(data))
    written = plots.plot_all(results, tmp_path / "img")
    assert sorted(p.name for p in written) == [
        "bench-listen-latency.png",
        "bench-rest-rps.png",
        "bench-search-latency.png",
        "bench-soak.png",
    ]
    for path in written:
        assert_png(path, min_width=700)
    # With Whisper's sweep beside it, the /listen figure has two panels: it is wider.
    assert imread(tmp_path / "img" / "bench-listen-latency.png").shape[1] > 1100


def test_listen_figure_without_whisper_results_and_missing_files_skipped(tmp_path: Path) -> None:
    (tmp_path / "listen.json").write_text(json.dumps(listen_result()))
    written = plots.plot_all(tmp_path, tmp_path / "img")
    assert [p.name for p in written] == ["bench-listen-latency.png"]
    assert_png(written[0], min_width=700)
    assert imread(written[0]).shape[1] < 1000  # one panel


def test_soak_verdict_memory_growth() -> None:
    passing = evaluate({}, samples(105), warmup_s=120, window_s=30)
    assert passing["pass"] is True
    assert passing["rss_after_warmup_mb"] == pytest.approx(100, abs=1)
    assert passing["rss_end_mb"] == pytest.approx(105, abs=1)
    failing = evaluate({}, samples(112), warmup_s=120, window_s=30)
    assert failing["pass"] is False
    [rss] = [c for c in failing["criteria"] if c["name"].startswith("RSS")]
    assert rss["pass"] is False
    assert rss["value"] > 1.10
    assert [c["pass"] for c in failing["criteria"] if not c["name"].startswith("RSS")] == [True, True]
    assert report_lines(failing)[-1] == "soak: FAIL"
    assert report_lines(passing)[-1] == "soak: PASS"


def test_soak_verdict_one_error_fails() -> None:
    verdict = evaluate({"GET /v1/memories?limit=20: HTTP 500": 1}, samples(100), warmup_s=120, window_s=30)
    assert verdict["pass"] is False
    assert verdict["errors"] == 1
    assert verdict["criteria"][0] == {"name": "zero errors", "value": 1, "limit": 0, "pass": False}
    assert all(c["pass"] for c in verdict["criteria"][1:])


def test_soak_verdict_leaking_fds_and_too_short_runs_fail() -> None:
    leaking = evaluate({}, samples(100, fds_end=200), warmup_s=120, window_s=30)
    assert leaking["pass"] is False
    assert [c["pass"] for c in leaking["criteria"]] == [True, True, False]
    short = evaluate({}, samples(100, minutes=2.4), warmup_s=120, window_s=30)  # 144 s
    assert short["pass"] is False
    assert evaluate({}, [], warmup_s=120, window_s=30)["pass"] is False


def test_one_transient_peak_does_not_decide() -> None:
    data = samples(100)
    data[-2]["rss_mb"] = 300  # one sample in the last window
    assert evaluate({}, data, warmup_s=120, window_s=30)["pass"] is True


def test_recorder_buckets_latencies_and_counts_errors() -> None:
    rec = Recorder(bucket_s=60)
    rec.latency("GET", 3.0)
    rec.latency("GET", 5.0)
    rec.error("GET", "HTTP 500", "boom")
    rec.error("GET", "HTTP 500", "boom")
    assert rec.errors == {"GET: HTTP 500": 2}
    assert len(rec.examples) == 2
    [bucket] = rec.by_bucket()
    assert bucket["bucket"] == 0
    assert bucket["routes"]["GET"]["n"] == 2
    assert bucket["routes"]["GET"]["p50"] == 4.0
    assert rec.totals()["GET"]["max"] == 5.0


def test_users_come_back_only_after_the_resume_window() -> None:
    clips = []
    for name, seconds in (("a", 30.0), ("b", 2.5), ("c", 10.0)):
        clip = Clip.__new__(Clip)
        clip.name, clip.seconds = name, seconds
        clips.append(clip)
    pool = users_per_slot(clips, 120)
    durations = [c.seconds for c in clips]
    # Between two sessions of one user come pool - 1 other clips, whichever clip comes first.
    gaps = [sum(durations[(i + k) % 3] for k in range(pool - 1)) for i in range(3)]
    assert min(gaps) > 150
    shorter = [sum(durations[(i + k) % 3] for k in range(pool - 2)) for i in range(3)]
    assert min(shorter) <= 150  # and no larger pool than needed


def test_server_log_lines_counted_as_errors() -> None:
    errors = [
        "ERROR - 2026-11-24 01:36:33,157 - omi_backend.listen - listen - listen: session 1 failed",
        "ERROR:    Exception in ASGI application",
        "Traceback (most recent call last):",
        "CRITICAL - 2026-11-24 01:36:33,157 - omi_backend - main - out of memory",
    ]
    fine = [
        "INFO - 2026-11-24 01:36:33,157 - omi_backend.listen - listen - session ended: the client left",
        "INFO - 2026-11-24 01:33:25,470 - faster_whisper - transcribe - Processing audio 00:01.830",
        "WARNING - 2026-11-24 01:36:33,157 - omi_backend.plugins - host - a slow plugin (errors: 0)",
    ]
    assert [bool(LOG_ERROR.search(line)) for line in errors + fine] == [True] * 4 + [False] * 3

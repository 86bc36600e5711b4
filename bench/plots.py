"""The figures of docs/BENCHMARKS.md, drawn from the JSON the benchmark scripts write.

Reads bench/results/*.json and writes, with matplotlib's Agg renderer (no display needed):

- ``bench-listen-latency.png``: /listen latency against concurrent sessions: the server's
  own cost with the scripted engine (listen.json, from ``bench_listen.py load ... --json``)
  and, when whisper.json exists (``bench_whisper.py sessions ... --json``), real Whisper;
- ``bench-rest-rps.png``: requests/s of ``GET /v1/memories?limit=20``, the bare Litestar
  route and ``POST /v1/memories`` against concurrent connections (rest.json, from
  ``bench_list.py --connections ... --with-create --json``);
- ``bench-search-latency.png``: search latency against the number of memories (search.json,
  from ``bench_search.py --memories ... --json``);
- ``bench-soak.png``: RSS, open fds and latency per minute over the soak (soak.json, from
  ``soak.py``).

A figure whose JSON is missing is skipped (and said so). Each title names the machine and
the date of its run. Run: ``.venv/bin/python bench/plots.py [--results DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
IMAGES = ROOT / "docs" / "img"
DPI = 110


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg renderer: PNG without a display
    return figure


def _subtitle(data: dict[str, Any]) -> str:
    run = data.get("run", {})
    machine = run.get("machine") or data.get("machine", "unknown machine")
    date = str(run.get("date", ""))[:16].replace("T", " ")
    return f"{machine}" + (f", {date} UTC" if date else "")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _mark_failures(ax: Axes, xs: Sequence[float], ys: Sequence[float], passed: Sequence[bool]) -> None:
    bad = [(x, y) for x, y, ok in zip(xs, ys, passed, strict=True) if not ok]
    if bad:
        ax.scatter(
            [x for x, _ in bad], [y for _, y in bad], s=120, facecolors="none", edgecolors="red", zorder=5
        )
        ax.plot([], [], "o", mfc="none", mec="red", label="target not met")


def plot_listen(listen: dict[str, Any], whisper: dict[str, Any] | None, out: Path) -> Path:
    """Latency against concurrent /listen sessions (scripted engine; Whisper beside it if given)."""
    figure = _figure(11 if whisper else 7, 4.8)
    axes = figure.subplots(1, 2 if whisper else 1, squeeze=False)[0]
    rows = [r for r in listen["sweep"] if r.get("latency", {}).get("p50") is not None]
    xs = [r["sessions"] for r in rows]
    ax = axes[0]
    ax.plot(xs, [r["latency"]["p50"] for r in rows], "o-", label="p50")
    ax.plot(xs, [r["latency"]["p99"] for r in rows], "s-", label="p99")
    lag = [(r["sessions"], r["lag"]["p99"]) for r in rows if r.get("lag", {}).get("p99") is not None]
    if lag:
        ax.plot([x for x, _ in lag], [y for _, y in lag], "^--", color="grey", label="event-loop lag p99")
    ax.axhline(100, color="red", linestyle=":", label="target: p99 < 100 ms")
    _mark_failures(ax, xs, [r["latency"]["p99"] for r in rows], [bool(r.get("pass")) for r in rows])
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrent /listen sessions")
    ax.set_ylabel("frame -> segment latency (ms, log scale)")
    ax.set_title(f"Server cost, scripted STT\n{_subtitle(listen)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if whisper:
        rows = [r for r in whisper["sweep"] if r.get("latency", {}).get("p50") is not None]
        xs = [r["sessions"] for r in rows]
        ax = axes[1]
        ax.plot(xs, [r["latency"]["p50"] / 1000 for r in rows], "o-", label="p50")
        ax.plot(xs, [r["latency"]["p99"] / 1000 for r in rows], "s-", label="p99")
        ax.axhline(3, color="red", linestyle=":", label="target: p99 < 3 s")
        _mark_failures(
            ax, xs, [r["latency"]["p99"] / 1000 for r in rows], [bool(r.get("pass")) for r in rows]
        )
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("concurrent /listen sessions (Whisper tiny.en, one core)")
        ax.set_ylabel("end of speech -> segment latency (s)")
        ax.set_title(f"Embedded Whisper\n{_subtitle(whisper)}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("/listen latency against concurrent sessions", fontweight="bold")
    return _save(figure, out)


def _rate_line(
    ax: Axes, xs: Sequence[int], rounds: Sequence[Sequence[float]], style: str, label: str
) -> None:
    means = [statistics.fmean(r) for r in rounds]
    low = [m - min(r) for m, r in zip(means, rounds, strict=True)]
    high = [max(r) - m for m, r in zip(means, rounds, strict=True)]
    ax.errorbar(xs, means, yerr=[low, high], fmt=style, capsize=3, label=label)


def plot_rest(rest: dict[str, Any], out: Path) -> Path:
    """Requests/s of the REST routes against the bare Litestar route, by concurrency."""
    figure = _figure(7.5, 5)
    ax = figure.subplots()
    sweep = rest["sweep"]
    xs = [r["connections"] for r in sweep]
    _rate_line(ax, xs, [r["bare_rps"] for r in sweep], "o--", "bare Litestar route, same bytes")
    _rate_line(ax, xs, [r["list_rps"] for r in sweep], "s-", "GET /v1/memories?limit=20")
    if all("create_rps" in r for r in sweep):
        _rate_line(ax, xs, [r["create_rps"] for r in sweep], "^-", "POST /v1/memories (5-minute transcript)")
    for r in sweep:
        ax.annotate(
            f"{r['ratio']:.2f}x",
            (r["connections"], statistics.fmean(r["list_rps"])),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("requests per second (log scale; bars: min-max of rounds)")
    ax.set_title(
        f"REST routes against the bare Litestar baseline (labels: GET / bare)\n{_subtitle(rest)}", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, out)


def plot_search(search: dict[str, Any], out: Path) -> Path:
    """Search latency against the number of memories of the user."""
    figure = _figure(7, 4.8)
    ax = figure.subplots()
    sweep = search["sweep"]
    xs = [r["memories"] for r in sweep]
    for key, style in (("p50", "o-"), ("p90", "^--"), ("p99", "s-")):
        ax.plot(xs, [r["ms"][key] for r in sweep], style, label=key)
    ax.axhline(10, color="red", linestyle=":", label="target: p50 <= 10 ms")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("memories of the user (log scale)")
    ax.set_ylabel("POST /v1/memories/search latency (ms)")
    ax.set_title(
        f"Search latency against the number of memories (limit 10)\n{_subtitle(search)}", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, out)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.3g} minutes"


def plot_soak(soak: dict[str, Any], out: Path) -> Path:
    """RSS, open fds and per-bucket latency over the soak."""
    figure = _figure(9, 9)
    top, middle, bottom = figure.subplots(3, 1, sharex=True)
    samples = soak["samples"]
    config, verdict = soak["config"], soak.get("evaluation", {})
    minutes = [s["t"] / 60 for s in samples]
    warmup = config["warmup_s"] / 60
    top.plot(minutes, [s["rss_mb"] for s in samples], "-", color="tab:blue", label="RSS")
    if "rss_after_warmup_mb" in verdict:
        baseline = verdict["rss_after_warmup_mb"]
        top.axhline(baseline, color="tab:blue", linestyle=":", alpha=0.6, label="RSS after warm-up")
        top.axhline(baseline * 1.10, color="red", linestyle=":", label="limit: 1.10 x RSS after warm-up")
    top.axvspan(0, warmup, color="grey", alpha=0.15, label="warm-up")
    top.set_ylabel("server RSS (MB)")
    fds = top.twinx()
    fds.plot(minutes, [s["fds"] for s in samples], "-", color="tab:orange", alpha=0.7, label="open fds")
    fds.set_ylabel("open file descriptors", color="tab:orange")
    handles, labels = top.get_legend_handles_labels()
    more, more_labels = fds.get_legend_handles_labels()
    top.legend(handles + more, labels + more_labels, fontsize=8, loc="best", framealpha=0.6)
    top.grid(True, alpha=0.3)
    buckets = soak["latency_ms_by_bucket"]
    width = config.get("bucket_s", 60) / 60
    routes = sorted({route for b in buckets for route in b["routes"]})
    for route in routes:
        ax = bottom if route.startswith("/listen") else middle
        points = [
            (b["start_s"] / 60 + width / 2, b["routes"][route])
            for b in buckets
            if b["routes"].get(route, {}).get("n", 0) > 0
        ]
        if not points:
            continue
        line = ax.plot([x for x, _ in points], [s["p99"] for _, s in points], "s-", label=f"{route} p99")
        color = line[0].get_color()
        ax.plot(
            [x for x, _ in points], [s["p50"] for _, s in points], "o--", color=color, label=f"{route} p50"
        )
    for ax, what in ((middle, "REST latency (ms, log scale)"), (bottom, "/listen latency (ms, log scale)")):
        ax.set_yscale("log")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.axvspan(0, warmup, color="grey", alpha=0.15)
        if ax.has_data():
            ax.legend(fontsize=7, ncol=2)
    bottom.set_xlabel(f"minutes of load (latency per {config.get('bucket_s', 60):g} s bucket)")
    load = (
        f"GET {config['list_rate']:g}/s, POST {config['create_rate']:g}/s, "
        f"{config['tick_sessions']} scripted + {config['whisper_sessions']} Whisper /listen sessions"
    )
    outcome = "PASS" if verdict.get("pass") else "FAIL"
    figure.suptitle(
        f"Soak, {_duration(config['duration_s'])}: {load}: {outcome}\n{_subtitle(soak)}", fontsize=10
    )
    return _save(figure, out)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def plot_all(results: Path, out: Path) -> list[Path]:
    """Every figure whose results exist; the paths written."""
    written: list[Path] = []
    listen = _read(results / "listen.json")
    whisper = _read(results / "whisper.json")
    if listen is not None:
        written.append(plot_listen(listen, whisper, out / "bench-listen-latency.png"))
    plots: list[tuple[str, Callable[[dict[str, Any], Path], Path], str]] = [
        ("rest.json", plot_rest, "bench-rest-rps.png"),
        ("search.json", plot_search, "bench-search-latency.png"),
        ("soak.json", plot_soak, "bench-soak.png"),
    ]
    for name, plot, image in plots:
        data = _read(results / name)
        if data is not None:
            written.append(plot(data, out / image))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON results are")
    parser.add_argument("--out", type=Path, default=IMAGES, help="where the PNG files go")
    args = parser.parse_args()
    written = plot_all(args.results, args.out)
    for path in written:
        print(path)
    expected = {
        "bench-listen-latency.png",
        "bench-rest-rps.png",
        "bench-search-latency.png",
        "bench-soak.png",
    }
    for missing in sorted(expected - {p.name for p in written}):
        print(f"skipped {missing}: its results are not in {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()

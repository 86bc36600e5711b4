"""Benchmark (web): server render time of the memory list and of a long memory page.

Two pages, signed in, on the embedded defaults: ``/`` listing 50 memories (one full page of
the list) and ``/memories/{id}`` for a 30-minute conversation (about 4,500 words, a few
hundred segments). Target: p50 under 20 ms for each.

Measured in-process: each request goes through the ASGI app (middleware, session lookup,
token check, store reads, template rendering) from httpx's in-process transport, timed from
send to the last byte; no sockets, no network, nothing subtracted. The htmx fragments of the
same pages are measured too, for comparison.
Run: ``.venv/bin/python bench/bench_web.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from litestar.testing import AsyncTestClient

from app.config import Settings
from app.core.models import ActionItem, Event, Memory, Structured, TranscriptSegment
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import build_services, create_app
from bench.common import machine, percentiles
from bench.transcripts import conversation

UID = "bench"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def sentence_segments(index: int, words: int) -> list[TranscriptSegment]:
    """About ``words`` words of two people talking, one segment per sentence (as engines cut)."""
    segments = []
    for turn in conversation(index, words):
        sentences = _SENTENCE.split(turn["text"])
        span = (turn["end"] - turn["start"]) / len(sentences)
        for i, text in enumerate(sentences):
            start = turn["start"] + i * span
            segments.append(
                TranscriptSegment(
                    text=text,
                    speaker=turn["speaker"],
                    is_user=turn["is_user"],
                    start=round(start, 2),
                    end=round(start + span, 2),
                )
            )
    return segments


def make_memory(index: int, words: int) -> Memory:
    """A stored memory with a realistic structure and a transcript of about ``words`` words."""
    segments = sentence_segments(index, words)
    started = START - timedelta(hours=index)
    return Memory(
        id=f"memory-{index:03d}",
        created_at=started + timedelta(seconds=segments[-1].end),
        started_at=started,
        finished_at=started + timedelta(seconds=segments[-1].end),
        structured=Structured(
            title=f"Weekly planning with the team, part {index}",
            overview=" ".join(s.text for s in segments[:3]),
            emoji="💼",
            category="work",
            action_items=[ActionItem(description=f"Follow up on item {i}") for i in range(4)],
            events=[Event(title="Design review", start=started + timedelta(days=2), duration=45)],
        ),
        transcript_segments=segments,
    )


async def seed(services: Services) -> tuple[str, str, int, int]:
    """50 memories plus one of 30 minutes; the token, the long one's id, its words and segments."""
    for index in range(1, 51):
        await services.store.put(UID, make_memory(index, words=150))
    long = make_memory(0, words=4_500)
    await services.store.put(UID, long)
    words = sum(len(s.text.split()) for s in long.transcript_segments)
    token = await TokenService(services.kv).create(UID)
    return token, long.id, words, len(long.transcript_segments)


async def timed(client: AsyncTestClient[Any], path: str, headers: dict[str, str], warmup: int, n: int) -> Any:
    samples = []
    for i in range(warmup + n):
        start = time.perf_counter()
        response = await client.get(path, headers=headers)
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200, (path, response.status_code)
        if i >= warmup:
            samples.append(elapsed)
    return {"path": path, "bytes": len(response.content), "ms": percentiles(samples)}


async def run(warmup: int, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        services = build_services(settings)
        app = create_app(settings, services=services)
        async with AsyncTestClient(app=app) as client:
            token, long_id, words, segments = await seed(services)
            form = (await client.get("/login")).text
            csrf = re.search(r'name="_csrf_token" value="([0-9a-f]+)"', form)
            assert csrf
            signed = await client.post("/login", data={"token": token, "_csrf_token": csrf.group(1)})
            assert signed.status_code == 200
            page = await timed(client, "/", {}, warmup, n)
            assert page["bytes"] > 0 and (await client.get("/")).text.count('<a href="/memories/') == 50
            memory = await timed(client, f"/memories/{long_id}", {}, warmup, n)
            fragments = {
                "list": await timed(client, "/", {"HX-Request": "true"}, warmup, n),
                "memory": await timed(client, f"/memories/{long_id}", {"HX-Request": "true"}, warmup, n),
            }
    return {
        "benchmark": "web pages: server render time, in-process ASGI (see the docstring)",
        "list_page": {"memories": 50, **page},
        "memory_page": {"words": words, "segments": segments, **memory},
        "fragments": fragments,
        "target_p50_ms": 20,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.warmup, args.requests)), indent=2))


if __name__ == "__main__":
    main()

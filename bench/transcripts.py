"""Realistic synthetic conversations for benchmarks: five minutes is about 750 spoken words."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "corpus.json"

EXTRA = [
    "We went over the budget for the next quarter and agreed to cut travel costs.",
    "The new onboarding flow reduced support tickets by about twenty percent.",
    "I think we should move the launch to the second week of March.",
    "Can you ask Priya whether the vendor contract has been signed?",
    "My sister is visiting this weekend so I will be offline on Saturday.",
    "The test suite takes almost forty minutes now, which slows everyone down.",
    "Let's schedule a call with the design team on Thursday at two.",
    "I need to renew my passport before the trip to Japan in April.",
    "The doctor said my blood pressure looks fine but I should sleep more.",
    "We should write down the decision so the new hires understand it.",
    "Remind me to pay the electricity bill before the end of the month.",
    "The museum downtown has an exhibition about Roman architecture.",
    "Honestly the coffee machine on the third floor has been broken for a week.",
    "Our customer in Berlin wants a demo of the reporting feature.",
    "I finished reading the book about the history of the printing press.",
    "Don't forget to water the plants while I am away.",
]


def sentences() -> list[str]:
    data = json.loads(CORPUS.read_text())
    pool = [u["text"] for clip in data.values() for u in clip["utterances"] if len(u["text"].split()) > 4]
    return pool + EXTRA


def conversation(seed: int, words: int = 750) -> list[dict[str, Any]]:
    """Transcript segments of about ``words`` words, two speakers taking turns."""
    rng = random.Random(seed)
    pool = sentences()
    segments: list[dict[str, Any]] = []
    total, t = 0, 0.0
    while total < words:
        text = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 3)))
        n = len(text.split())
        duration = n / 2.5
        speaker = len(segments) % 2
        segments.append(
            {
                "text": text,
                "speaker": f"SPEAKER_{speaker}",
                "speaker_id": speaker,
                "is_user": speaker == 0,
                "person_id": None,
                "start": round(t, 2),
                "end": round(t + duration, 2),
            }
        )
        total += n
        t += duration + 0.4
    return segments


def create_body(seed: int, words: int = 750) -> dict[str, Any]:
    segments = conversation(seed, words)
    return {
        "started_at": "2026-11-23T09:00:00+00:00",
        "finished_at": "2026-11-23T09:05:00+00:00",
        "transcript_segments": segments,
    }

"""Transcript helpers: segment merging, speech-profile offsets, timeline shifts, plain text.

A live session's segments arrive one final result at a time. The client gets each result as
it comes; the memory gets them merged (:func:`merge_into`): a segment that continues the
previous one (same speaker, same ``is_user``, a pause of at most ``max_gap`` seconds) is
joined onto it.

With a speech profile the engine hears the profile first and the live audio after it
(:func:`split_profile`): the segments of the profile are dropped, the speaker who spoke most
of it is the user (:func:`user_speaker`), and every live segment is moved back by the
profile's length so the client's times start at 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from app.core.models import TranscriptSegment

__all__ = [
    "MAX_MERGED_CHARS",
    "MERGE_GAP_S",
    "ProfileFilter",
    "mark_user",
    "merge_into",
    "merged",
    "shift",
    "split_profile",
    "transcript_text",
    "user_speaker",
]

MERGE_GAP_S: Final = 3.0
MAX_MERGED_CHARS: Final = 10_000  # a merged segment stops growing here (a long monologue)


def _continues(previous: TranscriptSegment, segment: TranscriptSegment, max_gap: float) -> bool:
    return (
        previous.speaker_id == segment.speaker_id
        and previous.is_user == segment.is_user
        and previous.person_id == segment.person_id
        and segment.start - previous.end <= max_gap
        and len(previous.text) + len(segment.text) < MAX_MERGED_CHARS
    )


def merge_into(
    target: list[TranscriptSegment], new: Iterable[TranscriptSegment], max_gap: float = MERGE_GAP_S
) -> None:
    """Append ``new`` to ``target``, joining each segment onto the last one it continues.

    The segments already in ``target`` are replaced, never modified, so a caller that kept
    one (sent it, journalled it) still holds what it had.
    """
    for segment in new:
        text = segment.text.strip()
        if not text:
            continue
        if target and _continues(target[-1], segment, max_gap):
            last = target[-1]
            target[-1] = msgspec.structs.replace(
                last, text=f"{last.text.strip()} {text}", end=max(last.end, segment.end)
            )
        else:
            target.append(msgspec.structs.replace(segment, text=text))


def merged(segments: Iterable[TranscriptSegment], max_gap: float = MERGE_GAP_S) -> list[TranscriptSegment]:
    """``segments`` with every continuation joined onto the segment it continues."""
    out: list[TranscriptSegment] = []
    merge_into(out, segments, max_gap)
    return out


def shift(segments: Iterable[TranscriptSegment], offset: float) -> list[TranscriptSegment]:
    """Copies of ``segments`` with ``offset`` seconds added to their times (never below 0)."""
    out = []
    for segment in segments:
        start = round(max(0.0, segment.start + offset), 3)
        end = round(max(start, segment.end + offset), 3)
        out.append(msgspec.structs.replace(segment, start=start, end=end))
    return out


def split_profile(
    segments: Sequence[TranscriptSegment], profile_s: float
) -> tuple[list[TranscriptSegment], list[TranscriptSegment]]:
    """The segments spoken in the first ``profile_s`` seconds, and the rest.

    A segment belongs to the profile when most of it lies inside (its middle is before the
    end of the profile): an engine that joins the profile's last word to the first live one
    puts the segment on the side that holds most of it.
    """
    profile = [s for s in segments if (s.start + s.end) / 2 < profile_s]
    live = [s for s in segments if (s.start + s.end) / 2 >= profile_s]
    return profile, live


def user_speaker(durations: dict[int, float]) -> int | None:
    """The speaker id that spoke longest in the profile (``durations``: id -> seconds)."""
    if not durations:
        return None
    return max(sorted(durations), key=lambda speaker: durations[speaker])


def mark_user(segments: Iterable[TranscriptSegment], speaker: int | None) -> list[TranscriptSegment]:
    """Copies of ``segments`` with ``is_user`` set on those of ``speaker`` (cleared on others)."""
    return [
        msgspec.structs.replace(s, is_user=speaker is not None and s.speaker_id == speaker) for s in segments
    ]


class ProfileFilter:
    """The live part of an engine's results when it heard a speech profile first.

    Args:
        profile_s: Seconds of profile (and any pad after it) before the live audio; 0 for none.
    """

    def __init__(self, profile_s: float) -> None:
        self.profile_s = profile_s
        self._heard: dict[int, float] = {}  # speaker id -> seconds spoken in the profile

    def live(self, segments: list[TranscriptSegment]) -> list[TranscriptSegment]:
        """The segments after the profile, ``is_user`` marked, times from the end of the profile."""
        if not self.profile_s:
            return segments
        spoken, live = split_profile(segments, self.profile_s)
        for segment in spoken:
            self._heard[segment.speaker_id] = (
                self._heard.get(segment.speaker_id, 0.0) + segment.end - segment.start
            )
        return shift(mark_user(live, user_speaker(self._heard)), -self.profile_s)


def transcript_text(segments: Iterable[TranscriptSegment]) -> str:
    """The words of ``segments``, one segment after another."""
    return " ".join(t for t in (s.text.strip() for s in segments) if t)

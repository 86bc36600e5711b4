"""Segment merging, timeline shifts and speech-profile helpers."""

from __future__ import annotations

import pytest

from app.api.listen import ParamError, parse_params
from app.core.listen import ListenParams
from app.core.models import TranscriptSegment
from app.core.transcript import (
    MAX_MERGED_CHARS,
    mark_user,
    merge_into,
    merged,
    shift,
    split_profile,
    transcript_text,
    user_speaker,
)


def seg(text: str, start: float, end: float, speaker: int = 0, *, is_user: bool = False) -> TranscriptSegment:
    return TranscriptSegment(text=text, speaker=f"SPEAKER_{speaker}", start=start, end=end, is_user=is_user)


def test_consecutive_segments_of_one_speaker_merge_when_the_pause_is_short() -> None:
    segments = [
        seg("Hello there.", 0.0, 1.0),
        seg(" How are you? ", 2.0, 3.0),  # 1 s pause: same turn
        seg("Fine.", 3.2, 4.0, speaker=1),  # another speaker
        seg("Thanks.", 4.1, 4.5, speaker=1),
        seg("Later.", 9.0, 9.5, speaker=1),  # 4.5 s pause: a new segment
        seg("   ", 9.6, 9.7, speaker=1),  # nothing said
    ]
    assert [(s.text, s.start, s.end, s.speaker) for s in merged(segments)] == [
        ("Hello there. How are you?", 0.0, 3.0, "SPEAKER_0"),
        ("Fine. Thanks.", 3.2, 4.5, "SPEAKER_1"),
        ("Later.", 9.0, 9.5, "SPEAKER_1"),
    ]
    assert merged(segments, max_gap=0.0)[0].text == "Hello there."
    assert transcript_text(segments) == "Hello there. How are you? Fine. Thanks. Later."


def test_merging_replaces_segments_and_never_changes_one_already_held() -> None:
    first = seg("one", 0.0, 1.0)
    target = [first]
    merge_into(target, [seg("two", 1.5, 2.0)])
    assert first.text == "one" and target[0].text == "one two" and target[0] is not first
    merge_into(target, [seg("user", 2.1, 2.5, is_user=True)])
    assert len(target) == 2  # the user is not merged into someone else's words


def test_a_merged_segment_stops_growing_at_its_size_limit() -> None:
    long = seg("x" * (MAX_MERGED_CHARS - 5), 0.0, 1.0)
    assert len(merged([long, seg("more words", 1.1, 2.0)])) == 2


def test_shift_moves_times_and_never_below_zero() -> None:
    shifted = shift([seg("a", 0.5, 1.0), seg("b", 3.0, 4.25)], -1.0)
    assert [(s.start, s.end) for s in shifted] == [(0.0, 0.0), (2.0, 3.25)]
    assert [(s.start, s.end) for s in shift(shifted, 10.0)] == [(10.0, 10.0), (12.0, 13.25)]


def test_profile_segments_are_those_mostly_inside_the_profile() -> None:
    segments = [seg("profile", 0.0, 4.0, 1), seg("straddles", 4.5, 6.5, 1), seg("live", 7.0, 8.0, 0)]
    spoken, live = split_profile(segments, 5.0)
    assert [s.text for s in spoken] == ["profile"]
    assert [s.text for s in live] == ["straddles", "live"]
    assert split_profile(segments, 6.0)[0][-1].text == "straddles"


def test_the_user_is_the_speaker_who_spoke_most_of_the_profile() -> None:
    assert user_speaker({}) is None
    assert user_speaker({0: 1.0, 2: 3.5, 1: 2.0}) == 2
    assert user_speaker({0: 2.0, 1: 2.0}) == 0  # a tie goes to the lowest id, deterministically
    marked = mark_user([seg("a", 0, 1, 0), seg("b", 1, 2, 2, is_user=True), seg("c", 2, 3, 2)], 2)
    assert [s.is_user for s in marked] == [False, True, True]
    assert [s.is_user for s in mark_user(marked, None)] == [False, False, False]


def test_listen_query_parameters_parse_as_the_app_sends_them() -> None:
    assert parse_params({}) == ListenParams()
    assert parse_params(
        {
            "uid": "alice",
            "language": "en",
            "sample_rate": "16000",
            "codec": "opus",
            "channels": "1",
            "include_speech_profile": "false",
            "new_memory_watch": "True",
        }
    ) == ListenParams(sample_rate=16_000, codec="opus", include_speech_profile=False, new_memory_watch=True)
    assert parse_params({"sample_rate": "", "new_memory_watch": "1"}).new_memory_watch is True
    for bad in (
        {"sample_rate": "16k"},
        {"sample_rate": "-1"},
        {"channels": "9999999999"},
        {"new_memory_watch": "yes"},
    ):
        with pytest.raises(ParamError):
            parse_params(bad)
    with pytest.raises(ParamError, match="language"):
        parse_params({"language": "x" * 17})

"""Date/time phrases resolved against the start of a conversation (Monday 2026-11-23 09:00)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from app.core.dates import duration_minutes, find_when

MONDAY = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def start(sentence: str, started_at: datetime = MONDAY) -> datetime:
    when = find_when(sentence, started_at)
    assert when is not None, sentence
    return when.start


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        (
            "Don't forget that the design review is next Tuesday at three in the afternoon.",
            at(2026, 12, 1, 15),
        ),
        ("Our flight to Lisbon leaves on Saturday at seven in the morning.", at(2026, 11, 28, 7)),
        ("Also call the plumber tomorrow morning about the kitchen sink.", at(2026, 11, 24, 9)),
        ("Yes, please book a follow up visit for the fifteenth of next month.", at(2026, 12, 15, 9)),
        ("Can you reserve a table at the seafood restaurant for Sunday evening?", at(2026, 11, 29, 19)),
        ("I will check in online tonight.", at(2026, 11, 23, 20)),
        ("The demo is on Tuesday.", at(2026, 11, 24, 9)),
        ("The demo is this Tuesday at 10 am.", at(2026, 11, 24, 10)),
        ("Let's meet next Monday at noon.", at(2026, 11, 30, 12)),
        ("Lunch on December 3rd at 12:30.", at(2026, 12, 3, 12, 30)),
        ("The party is on the 5th.", at(2026, 12, 5, 9)),
        ("Dinner on 2026-12-24 at 19:30.", at(2026, 12, 24, 19, 30)),
        ("We fly back in two weeks.", at(2026, 12, 7, 9)),
        ("The call is at 3 pm.", at(2026, 11, 23, 15)),
        ("Pick me up at 8:15 am.", at(2026, 11, 24, 8, 15)),  # already past today: tomorrow
        ("Call me this afternoon.", at(2026, 11, 23, 14)),
        ("Dinner tomorrow evening at eight.", at(2026, 11, 24, 20)),
        ("The train leaves Friday at half past six.", at(2026, 11, 27, 18, 30)),
        ("The gym opens Thursday at quarter to seven in the morning.", at(2026, 11, 26, 6, 45)),
        ("Meet me the day after tomorrow at nine thirty.", at(2026, 11, 25, 9, 30)),
        ("Midnight release on Saturday at midnight.", at(2026, 11, 28, 0)),
        ("The concert starts Sunday at ten at night.", at(2026, 11, 29, 22)),
    ],
)
def test_resolves_phrases(sentence: str, expected: datetime) -> None:
    when = find_when(sentence, MONDAY)
    assert when is not None
    assert when.start == expected
    assert not when.deadline


def test_next_weekday_is_in_the_following_calendar_week() -> None:
    # Monday: "Tuesday" is tomorrow, "next Tuesday" a week later.
    assert start("on Tuesday", MONDAY).date().isoformat() == "2026-11-24"
    assert start("next Tuesday", MONDAY).date().isoformat() == "2026-12-01"
    # Saturday: next week starts on Monday the 23rd, so "next Tuesday" is the 24th.
    saturday = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert start("next Tuesday", saturday).date().isoformat() == "2026-11-24"
    # The same weekday as today, without "this", is a week ahead.
    assert start("on Monday", MONDAY).date().isoformat() == "2026-11-30"
    assert start("this Monday at 5 pm", MONDAY).date().isoformat() == "2026-11-23"


@pytest.mark.parametrize(
    "sentence",
    [
        "Yesterday I finished the login page and fixed two bugs in the payment flow.",
        "I saw him last Tuesday.",
        "We met two weeks ago on Friday.",
        "Today I need to review the pull request from Maria.",
        "Should I come back next month?",
        "Then we should leave the house by five.",
        "In the morning I usually run.",
        "I fixed two bugs and one crash.",
        "The second point is the important one.",
        "Good morning everyone.",
        "",
    ],
)
def test_no_date_in(sentence: str) -> None:
    assert find_when(sentence, MONDAY) is None


def test_a_day_after_by_is_a_deadline() -> None:
    when = find_when("I will send the slides to the team by Friday.", MONDAY)
    assert when is not None
    assert when.deadline
    assert when.start == at(2026, 11, 27, 9)
    before = find_when("Finish it before Thursday at noon.", MONDAY)
    assert before is not None
    assert before.deadline


def test_spans_cover_the_phrases() -> None:
    sentence = "Our flight to Lisbon leaves on Saturday at seven in the morning."
    when = find_when(sentence, MONDAY)
    assert when is not None
    assert [sentence[a:b] for a, b in when.spans] == ["on Saturday", "at seven in the morning"]
    assert when.has_time


@pytest.mark.parametrize("tz", [timezone(timedelta(hours=2)), ZoneInfo("Europe/Berlin")])
def test_keeps_the_timezone_and_local_times(tz: timezone | ZoneInfo) -> None:
    started = datetime(2026, 11, 23, 9, 0, tzinfo=tz)
    cases = {
        "Our flight leaves on Saturday at seven in the morning.": (2026, 11, 28, 7, 0),
        "Call the plumber tomorrow morning.": (2026, 11, 24, 9, 0),
        "Book a visit for the fifteenth of next month.": (2026, 12, 15, 9, 0),
        "The design review is next Tuesday at three in the afternoon.": (2026, 12, 1, 15, 0),
    }
    for sentence, local in cases.items():
        when = find_when(sentence, started)
        assert when is not None, sentence
        assert when.start.tzinfo is tz
        assert when.start.utcoffset() == timedelta(hours=1 if isinstance(tz, ZoneInfo) else 2)
        assert when.start.replace(tzinfo=None) == datetime(*local)


def test_late_evening_start_rolls_a_time_to_tomorrow() -> None:
    evening = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    assert start("The call is at 3 pm.", evening) == at(2026, 11, 24, 15)


@pytest.mark.parametrize(
    ("sentence", "minutes"),
    [
        ("The workshop is on Friday for two hours.", 120),
        ("Book the room for 45 minutes.", 45),
        ("We meet for half an hour on Monday.", 30),
        ("It runs for an hour and a half.", 90),
        ("The meeting is on Friday.", None),
    ],
)
def test_duration(sentence: str, minutes: int | None) -> None:
    assert duration_minutes(sentence) == minutes

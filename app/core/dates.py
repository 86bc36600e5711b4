"""Date and time phrases in a sentence, resolved against the moment a conversation started.

Candidates are found by regular expressions; only short, normalised date phrases are handed
to ``dateparser`` (running it over whole transcripts is slow and finds dates in ordinary
words). Everything is English, and times are wall-clock times in ``started_at``'s timezone.

Semantics, with ``started_at`` on Monday 23 November 2026:

- "Tuesday", "on/by/for Tuesday", "coming Tuesday": the first Tuesday after today (24 Nov);
  on a Tuesday that is a week ahead.
- "this Tuesday": this calendar week's Tuesday if it is today or later, else the coming one.
- "next Tuesday": the Tuesday of next calendar week, weeks starting on Monday (1 Dec). Said
  on Saturday 21 Nov it means Tuesday 24 Nov, the one in the week that follows.
- today, tonight, tomorrow, the day after tomorrow; "yesterday", "last Tuesday" and "... ago"
  are the past and give nothing.
- "the fifteenth of next month", "December 3rd", "3 December", "in two weeks", "2026-12-15":
  normalised ("15th of next month") and resolved by ``dateparser`` (future preferred);
  "on the fifteenth" alone is the next fifteenth of a month. "next week" alone is too vague.
- Times: "at three in the afternoon" 15:00, "at 3 pm", "at 15:30", "half past three",
  "quarter to four", "noon", "midnight". An hour with no am/pm or period is 13:00-18:00 for
  one to six and morning for seven to eleven. A period alone: morning 09:00, afternoon 14:00,
  evening 19:00, night and tonight 20:00. A day without a time is 09:00.
- A time without a day ("at 3 pm", "this afternoon") is today if still ahead, else tomorrow;
  a bare "at three" or "by five" without a day is not a date.
- A day introduced by "by", "before", "until" is a deadline (``When.deadline``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import dateparser

__all__ = ["When", "duration_minutes", "find_when"]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec"
)
_HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
_NUMBERS = {word: n for n, word in enumerate(_HOURS, 1)} | {"a": 1, "an": 1}
_MINUTES = {"oh five": 5, "o five": 5, "ten": 10, "fifteen": 15, "twenty": 20, "twenty five": 25}
_MINUTES |= {"thirty": 30, "forty": 40, "forty five": 45, "fifty": 50, "fifty five": 55}
_FIRST_TWENTY = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth"
    " fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)
_ORDINALS = {word: n for n, word in enumerate(_FIRST_TWENTY.split(), 1)}
_ORDINALS |= {f"twenty {word}": 20 + n for word, n in list(_ORDINALS.items())[:9]}
_ORDINALS |= {"thirtieth": 30, "thirty first": 31}
_PERIODS = {"morning": 9, "afternoon": 14, "evening": 19, "night": 20, "tonight": 20, "lunchtime": 12}


def _alt(words: Iterable[str]) -> str:
    return "|".join(w.replace(" ", r"[\s-]+") for w in sorted(words, key=len, reverse=True))


_ORD = rf"(?:\d{{1,2}}(?:st|nd|rd|th)|{_alt(_ORDINALS)})"
_DAY_RE = re.compile(
    rf"""\b(?P<pre>(?:(?:on|by|before|until|till|for|from|this|next|coming|last)\s+){{0,2}})
    (?:(?P<rel>(?:the\s+)?day\s+after\s+tomorrow|tomorrow|today|tonight|yesterday)
     |(?P<wd>{"|".join(WEEKDAYS)})
     |(?:the\s+)?(?P<ord1>{_ORD})\s+of\s+(?P<mon1>{_MONTHS}|next\s+month|this\s+month)
     |(?P<mon2>{_MONTHS})\s+(?:the\s+)?(?P<ord2>{_ORD}|\d{{1,2}})
     |(?:the\s+)?(?P<ord3>{_ORD}|\d{{1,2}})\s+(?:of\s+)?(?P<mon3>{_MONTHS})
     |the\s+(?P<ord4>{_ORD})
     |in\s+(?P<count>\d{{1,2}}|{_alt(_NUMBERS)})\s+(?P<unit>days?|weeks?)
     |(?P<iso>\d{{4}}-\d{{2}}-\d{{2}}))\b""",
    re.IGNORECASE | re.VERBOSE,
)
_HOUR = rf"(?:1[0-2]|0?[1-9]|{_alt(_HOURS)})"
_TIME_RE = re.compile(
    rf"""(?P<pre>\b(?:at|around|by|from)\s+)?
    (?:\b(?P<h24>[01]?\d|2[0-3]):(?P<m24>[0-5]\d)\b
     |(?P<frac>half\s+past|quarter\s+past|quarter\s+to)\s+(?P<h1>{_HOUR})\b
     |\b(?P<h2>{_HOUR})\b(?:\s+(?P<mw>{_alt(_MINUTES)})\b)?
     |\b(?P<noon>noon|midday|midnight)\b)
    (?P<suffix>\s*(?P<ampm>[ap])(?:\.m\.|m\b)|\s+o'?clock\b|\s+in\s+the\s+(?:morning|afternoon|evening)\b
     |\s+at\s+night\b|\s+tonight\b|\s+this\s+(?:morning|afternoon|evening)\b)?""",
    re.IGNORECASE | re.VERBOSE,
)
_PERIOD_RE = re.compile(
    r"(?<!good\s)\b(?P<lead>this\s+|in\s+the\s+)?(?P<period>morning|afternoon|evening|night|tonight|lunchtime)\b",
    re.IGNORECASE,
)
# Cheap tests that spare most sentences the big expressions above.
_DAY_HINT = re.compile(
    rf"day\b|tonight|tomorrow|month|\b(?:{_MONTHS})\b|\bthe\s+\w+(?:st|nd|rd|th)\b|\d{{4}}-\d|\bin\s+\w+\s+(?:day|week)",
    re.IGNORECASE,
)
_TIME_HINT = re.compile(r"\d|o'?clock|noon|midday|midnight|\b(?:at|by|around|from|half|quarter)\s", re.I)
_PAST_RE = re.compile(r"\b(?:yesterday|ago|last\s+(?:night|week|month|year))\b", re.IGNORECASE)
_DURATION_RE = re.compile(
    rf"\bfor\s+(?:(?P<ninety>an?\s+hour\s+and\s+a\s+half)|(?P<half>half\s+an\s+hour)"
    rf"|(?P<n>\d{{1,3}}|{_alt(_NUMBERS)})\s+(?P<unit>hours?|minutes?|mins?))\b",
    re.IGNORECASE,
)
_DEADLINE = frozenset({"by", "before", "until", "till"})
# dateparser keeps module-level parser state and is not documented as thread-safe
# (scrapinghub/dateparser#441); structure() runs in worker threads, so calls are serialised.
_DATEPARSER_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class When:
    """A resolved date/time phrase: its start, where it lies in the sentence, what kind it is."""

    start: datetime
    spans: tuple[tuple[int, int], ...]
    deadline: bool
    has_time: bool


def find_when(sentence: str, started_at: datetime) -> When | None:
    """The first date/time phrase of ``sentence`` as an aware datetime in ``started_at``'s zone."""
    if _PAST_RE.search(sentence):
        return None
    # Work on wall-clock times: dateparser's RETURN_AS_TIMEZONE_AWARE mixes offsets up (with a
    # +02:00 base, "saturday 07:00" came back as 07:00+00:00), so we parse naive local times
    # and attach started_at's tzinfo ourselves.
    base = started_at.replace(tzinfo=None)
    hint = _DAY_HINT.search(sentence)  # a day phrase starts at most ~40 characters before it
    matches = _DAY_RE.finditer(sentence, max(0, hint.start() - 40)) if hint else iter(())
    day_match = next((m for m in matches if _day_ok(m)), None)
    day = _resolve_day(day_match, base) if day_match else None
    if day_match is not None and day is None:
        return None  # "last Tuesday", "yesterday", an impossible date
    time_match = (
        next((m for m in _TIME_RE.finditer(sentence) if _is_time(m)), None)
        if _TIME_HINT.search(sentence)
        else None
    )
    period = next((p for p in _PERIOD_RE.finditer(sentence) if not _inside(p, time_match)), None)
    rel = (day_match["rel"] or "").lower() if day_match else ""
    period_name = "tonight" if rel == "tonight" else (period["period"].lower() if period else None)
    if time_match is not None:
        hour, minute, strong = _clock(time_match, period_name)
    elif period_name is not None:
        hour, minute, strong = _PERIODS[period_name], 0, False
    else:
        hour, minute, strong = 9, 0, False
    if rel == "today" and time_match is None and period_name is None:
        return None  # "Today I need to ...": the present, not an appointment
    if day is None:
        this_period = period is not None and (period["lead"] or "").lower().startswith("this")
        if not (strong or (time_match is None and this_period)):
            return None  # "at three", "by five", "in the morning": no day to anchor them
        day = base.date() if time(hour, minute) > base.time() else base.date() + timedelta(days=1)
    start = datetime.combine(day, time(hour, minute)).replace(tzinfo=started_at.tzinfo)
    spans = tuple(sorted({m.span() for m in (day_match, time_match, period) if m is not None}))
    lead = day_match["pre"] if day_match else (time_match["pre"] if time_match else None)
    deadline = bool(_DEADLINE & set((lead or "").lower().split()))
    return When(start, spans, deadline, time_match is not None)


def duration_minutes(sentence: str) -> int | None:
    """Minutes stated as "for two hours", "for 45 minutes", "for half an hour"; else ``None``."""
    match = _DURATION_RE.search(sentence)
    if match is None:
        return None
    if match["ninety"] or match["half"]:
        return 90 if match["ninety"] else 30
    n = _number(match["n"])
    return n * 60 if match["unit"].lower().startswith("hour") else n


def _day_ok(match: re.Match[str]) -> bool:
    # "the second" needs "on/by/for" before it to be a day of the month ("the second point").
    return not match["ord4"] or bool(match["pre"].strip())


def _inside(inner: re.Match[str], outer: re.Match[str] | None) -> bool:
    return outer is not None and outer.start() <= inner.start() and inner.end() <= outer.end()


def _number(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS[word]


def _ordinal(word: str) -> int:
    word = " ".join(re.split(r"[\s-]+", word.lower()))
    digits = re.match(r"\d+", word)
    return int(digits.group()) if digits else _ORDINALS[word]


def _resolve_day(match: re.Match[str], base: datetime) -> date | None:
    today = base.date()
    pre = set(match["pre"].lower().split())
    if "last" in pre:
        return None
    if match["rel"]:
        rel = match["rel"].lower()
        offsets = {"today": 0, "tonight": 0, "tomorrow": 1}
        return None if rel == "yesterday" else today + timedelta(days=offsets.get(rel, 2))
    if match["wd"]:
        target = WEEKDAYS.index(match["wd"].lower())
        if "next" in pre:
            return today - timedelta(days=today.weekday() - 7) + timedelta(days=target)
        delta = target - today.weekday()
        if "this" in pre and "coming" not in pre and delta >= 0:
            return today + timedelta(days=delta)
        return today + timedelta(days=delta % 7 or 7)
    if match["ord4"]:
        day = _ordinal(match["ord4"])
        month = today.replace(day=1) if day >= today.day else (today.replace(day=28) + timedelta(days=4))
        try:
            return month.replace(day=day)
        except ValueError:
            return None
    return _dateparser_day(_normalise(match), base)


def _normalise(match: re.Match[str]) -> str:
    if match["iso"]:
        return match["iso"]
    if match["count"]:
        return f"in {_number(match['count'])} {match['unit'].lower()}"
    ordinal = match["ord1"] or match["ord2"] or match["ord3"]
    month = (match["mon1"] or match["mon2"] or match["mon3"]).lower()
    day = _ordinal(ordinal)
    return f"{day} of {month}" if match["ord1"] else f"{day} {month}"


def _dateparser_day(phrase: str, base: datetime) -> date | None:
    settings = {"RELATIVE_BASE": base, "PREFER_DATES_FROM": "future", "RETURN_AS_TIMEZONE_AWARE": False}
    with _DATEPARSER_LOCK:
        parsed = dateparser.parse(phrase, languages=["en"], settings=settings)
    return parsed.date() if parsed is not None else None


def _is_time(match: re.Match[str]) -> bool:
    # A bare number is not a time: "two bugs", "one of them". "at three", "by five" are.
    return not match["h2"] or bool(match["pre"] or match["suffix"] or match["mw"])


def _clock(match: re.Match[str], period: str | None) -> tuple[int, int, bool]:
    """``(hour, minute, unambiguous)`` of a time match; ``period`` is a nearby "evening" etc."""
    suffix = (match["suffix"] or "").lower()
    if match["noon"]:
        return (0 if match["noon"].lower() == "midnight" else 12), 0, True
    if match["h24"]:
        hour, minute = int(match["h24"]), int(match["m24"])
        if hour > 12 or match["h24"].startswith("0"):
            return hour, minute, True
    elif match["frac"]:
        frac = " ".join(match["frac"].lower().split())
        hour = _number(match["h1"]) - (1 if frac == "quarter to" else 0)
        minute = {"half past": 30, "quarter past": 15}.get(frac, 45)
    else:
        hour = _number(match["h2"])
        minute = _MINUTES[" ".join(re.split(r"[\s-]+", match["mw"].lower()))] if match["mw"] else 0
    strong = bool(suffix) or match["h24"] is not None or match["frac"] is not None
    if match["ampm"]:
        pm = match["ampm"].lower() == "p"
    elif suffix and "clock" not in suffix:
        pm = "morning" not in suffix and not (hour == 12 and "night" in suffix)
    elif period is not None:
        pm = period != "morning" and not (hour == 12 and period in {"night", "tonight"})
    else:
        pm = hour == 12 or 1 <= hour <= 6
    return hour % 12 + (12 if pm else 0), minute, strong

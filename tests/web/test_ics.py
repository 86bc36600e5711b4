"""``/memories/{id}/events/{i}.ics``: a valid iCalendar file, read back by a real parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import icalendar
import pytest

from app.core.models import Event
from app.web.ics import escape_text, event_calendar, fold, ics_filename
from tests.web.conftest import Site, memory

START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TRICKY = "Review; budget, Q4 \\ plan\nsecond line — ünïcødé 🎉 " + "long " * 40


def test_text_escaping() -> None:
    assert escape_text("a;b,c\\d\ne\r\nf\rg") == "a\\;b\\,c\\\\d\\ne\\nf\\ng"
    assert escape_text("bell\x07 and tab\t") == "bell and tab\t"


def test_lines_fold_at_75_octets_without_splitting_characters() -> None:
    line = "DESCRIPTION:" + "é🎉a" * 60
    folded = fold(line)
    parts = folded.split("\r\n")
    assert all(len(p.encode()) <= 75 for p in parts)
    assert all(p.startswith(" ") for p in parts[1:])
    assert "".join(p[1:] if i else p for i, p in enumerate(parts)) == line
    assert fold("SHORT:x") == "SHORT:x"


def test_the_calendar_parses_back_with_every_field() -> None:
    event = Event(title=TRICKY, description=TRICKY, start=START, duration=45)
    text = event_calendar(event, "m1-0@omi-backend", now=datetime(2026, 11, 23, tzinfo=UTC))
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    calendar = icalendar.Calendar.from_ical(text)
    [vevent] = calendar.walk("VEVENT")
    assert str(vevent["SUMMARY"]) == TRICKY
    assert str(vevent["DESCRIPTION"]) == TRICKY
    assert vevent.decoded("DTSTART") == START
    assert vevent.decoded("DTEND") == START + timedelta(minutes=45)
    assert str(vevent["UID"]) == "m1-0@omi-backend"
    assert calendar["VERSION"] == "2.0" and "PRODID" in calendar


def test_download_names_are_safe() -> None:
    assert ics_filename('Design "review"/../x') == "Design-review-x.ics"
    assert ics_filename("🎉") == "event.ics"


@pytest.mark.anyio
async def test_the_event_download(web: Site) -> None:
    events = [
        Event(title="Dentist", start=START, duration=30),
        Event(title=TRICKY, description="Bring; things, please", start=START, duration=180),
    ]
    await web.services.store.put("alice", memory("m1", events=events))
    response = await web.client.get("/memories/m1/events/1.ics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="Review-budget-Q4-plan')
    [vevent] = icalendar.Calendar.from_ical(response.content).walk("VEVENT")
    assert str(vevent["SUMMARY"]) == TRICKY
    assert str(vevent["DESCRIPTION"]) == "Bring; things, please"
    assert vevent.decoded("DTEND") - vevent.decoded("DTSTART") == timedelta(minutes=180)
    for missing in ("2.ics", "0.txt", "-1.ics", "x.ics", "00000.ics"):
        assert (await web.client.get(f"/memories/m1/events/{missing}")).status_code == 404, missing

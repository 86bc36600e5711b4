"""One memory event as an iCalendar file (RFC 5545) that a calendar app can import.

Text values are escaped (backslash, semicolon, comma, newline), control characters dropped,
lines folded at 75 octets without splitting a UTF-8 character, and every line ends in CRLF.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from app.core.models import Event, utcnow

__all__ = ["escape_text", "event_calendar", "fold", "ics_filename"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SLUG = re.compile(r"[^A-Za-z0-9]+")


def escape_text(value: str) -> str:
    """A TEXT value: ``\\`` ``;`` ``,`` escaped, line breaks as ``\\n``, control characters gone."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROL.sub("", value)
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def fold(line: str, limit: int = 75) -> str:
    """A content line folded into parts of at most ``limit`` octets, joined by CRLF and a space."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for char in line:
        width = len(char.encode())
        budget = limit if not parts else limit - 1  # continuation lines start with a space
        if size + width > budget:
            parts.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    parts.append("".join(current))
    return "\r\n ".join(parts)


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def event_calendar(event: Event, uid: str, *, now: datetime | None = None) -> str:
    """A VCALENDAR holding ``event`` as one VEVENT with the stable ``uid``."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//omi-backend//memories//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{escape_text(uid)}",
        f"DTSTAMP:{_utc(now or utcnow())}",
        f"DTSTART:{_utc(event.start)}",
        f"DTEND:{_utc(event.start + timedelta(minutes=event.duration))}",
        f"SUMMARY:{escape_text(event.title)}",
    ]
    if event.description:
        lines.append(f"DESCRIPTION:{escape_text(event.description)}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "".join(fold(line) + "\r\n" for line in lines)


def ics_filename(title: str) -> str:
    """A safe ASCII file name for the event's download."""
    slug = _SLUG.sub("-", title).strip("-")[:60].strip("-")
    return f"{slug or 'event'}.ics"

"""Domain models with the Omi contract's JSON field names (OMI_CONTRACT.md section 2).

Every datetime that enters through one of these structs is made timezone-aware (a naive
value is taken as UTC), so every datetime that leaves is ISO 8601 with a timezone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "CATEGORIES",
    "ActionItem",
    "Category",
    "CreateMemory",
    "Event",
    "Geolocation",
    "Memory",
    "MemoryPhoto",
    "MemorySource",
    "Message",
    "PluginResult",
    "SearchRequest",
    "Structured",
    "TranscriptSegment",
    "Visibility",
    "aware",
    "utcnow",
]

Category = Literal[
    "personal",
    "education",
    "health",
    "finance",
    "legal",
    "philosophy",
    "spiritual",
    "science",
    "entrepreneurship",
    "parenting",
    "romantic",
    "travel",
    "inspiration",
    "technology",
    "business",
    "social",
    "work",
    "sports",
    "literature",
    "history",
    "politics",
    "architecture",
    "other",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]

MemorySource = Literal["friend", "openglass", "screenpipe", "workflow"]
Visibility = Literal["private", "shared", "public"]

_SPEAKER_RE = re.compile(r"^SPEAKER_(\d+)$")

# Bounds that keep one request from exhausting the server; generous for real conversations.
Text = Annotated[str, msgspec.Meta(max_length=100_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=2_000)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=7 * 24 * 3600)]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """``value`` with a timezone: naive datetimes are taken as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class TranscriptSegment(msgspec.Struct, kw_only=True):
    """One stretch of speech by one speaker; times in seconds from the start of the session."""

    text: Text
    speaker: Annotated[str, msgspec.Meta(pattern=r"^SPEAKER_\d{1,3}$")] = "SPEAKER_0"
    speaker_id: int = 0
    is_user: bool = False
    person_id: str | None = None
    start: Seconds = 0.0
    end: Seconds = 0.0

    def __post_init__(self) -> None:
        match = _SPEAKER_RE.match(self.speaker)
        number = int(match.group(1)) if match else 0
        # The contract's speakers are not zero-padded: "SPEAKER_01" becomes "SPEAKER_1".
        self.speaker = f"SPEAKER_{number}"
        self.speaker_id = number
        if self.end < self.start:
            raise ValueError("segment end is before its start")


class ActionItem(msgspec.Struct, kw_only=True):
    description: ShortText
    completed: bool = False


class Event(msgspec.Struct, kw_only=True):
    title: ShortText
    start: datetime
    description: Text = ""
    duration: Annotated[int, msgspec.Meta(ge=1, le=180)] = 30
    created: bool = False

    def __post_init__(self) -> None:
        self.start = aware(self.start)


class Structured(msgspec.Struct, kw_only=True):
    title: ShortText = ""
    overview: Text = ""
    emoji: ShortText = "🧠"
    category: Category = "other"
    action_items: list[ActionItem] = msgspec.field(default_factory=list)
    events: list[Event] = msgspec.field(default_factory=list)


class Geolocation(msgspec.Struct, kw_only=True):
    latitude: float
    longitude: float
    google_place_id: str | None = None
    address: str | None = None
    location_type: str | None = None


class MemoryPhoto(msgspec.Struct, kw_only=True):
    base64: str
    description: str = ""


class PluginResult(msgspec.Struct, kw_only=True):
    plugin_id: str
    content: str


class Memory(msgspec.Struct, kw_only=True):
    """A finished conversation as the Omi app reads it."""

    id: str
    created_at: datetime
    started_at: datetime
    finished_at: datetime
    source: MemorySource = "friend"
    language: str | None = None
    structured: Structured = msgspec.field(default_factory=Structured)
    transcript_segments: list[TranscriptSegment] = msgspec.field(default_factory=list)
    geolocation: Geolocation | None = None
    photos: list[MemoryPhoto] = msgspec.field(default_factory=list)
    plugins_results: list[PluginResult] = msgspec.field(default_factory=list)
    external_data: dict[str, Any] | None = None
    postprocessing: dict[str, Any] | None = None
    discarded: bool = False
    deleted: bool = False
    visibility: Visibility = "private"

    def __post_init__(self) -> None:
        self.created_at = aware(self.created_at)
        self.started_at = aware(self.started_at)
        self.finished_at = aware(self.finished_at)

    def transcript_text(self) -> str:
        """The transcript as plain text, one segment after another."""
        return " ".join(s.text.strip() for s in self.transcript_segments if s.text.strip())


class CreateMemory(msgspec.Struct, kw_only=True):
    """Body of ``POST /v1/memories``."""

    started_at: datetime
    finished_at: datetime
    transcript_segments: Annotated[list[TranscriptSegment], msgspec.Meta(max_length=20_000)] = msgspec.field(
        default_factory=list
    )
    geolocation: Geolocation | None = None
    photos: Annotated[list[MemoryPhoto], msgspec.Meta(max_length=100)] = msgspec.field(default_factory=list)
    source: MemorySource = "friend"
    language: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    processing_memory_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None

    def __post_init__(self) -> None:
        self.started_at = aware(self.started_at)
        self.finished_at = aware(self.finished_at)
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")


class Message(msgspec.Struct, kw_only=True):
    """A chat or plugin message."""

    id: str
    text: Text
    created_at: datetime
    sender: Literal["ai", "human"] = "ai"
    plugin_id: str | None = None
    from_external_integration: bool = False
    type: Literal["text"] = "text"
    memories_id: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        self.created_at = aware(self.created_at)


class SearchRequest(msgspec.Struct, kw_only=True):
    """Body of ``POST /v1/memories/search`` (our addition)."""

    query: Annotated[str, msgspec.Meta(min_length=1, max_length=2_000)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    start_date: datetime | None = None
    end_date: datetime | None = None

    def __post_init__(self) -> None:
        if self.start_date is not None:
            self.start_date = aware(self.start_date)
        if self.end_date is not None:
            self.end_date = aware(self.end_date)

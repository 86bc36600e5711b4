"""The ports: every outside service the domain talks to, as a ``typing.Protocol``.

Each port has an embedded adapter (nothing but ``pip install``) and a production adapter,
one module each under ``app/backends``. ``create_app`` picks them from ``Settings``; nothing
else branches on the choice. ``tests/backends`` holds one contract suite per port that every
adapter of that port must pass.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from app.core.models import Memory, Message, Structured, TranscriptSegment

__all__ = [
    "BlobStore",
    "Embedder",
    "KeyValue",
    "LanguageModel",
    "MemoryQuery",
    "MemoryStore",
    "SegmentsCallback",
    "SpeechStream",
    "SpeechToText",
    "Vector",
    "VectorIndex",
    "VectorItem",
    "VectorMatch",
]

Vector = npt.NDArray[np.float32]


class MemoryQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Which of a user's memories to list: newest (``created_at``) first.

    Deleted memories only with ``include_deleted`` (``migrate`` copies them; Firestore's
    declared indexes cover it without the other filters, which is how ``migrate`` asks).
    """

    limit: int = 100
    offset: int = 0
    include_discarded: bool = True
    include_deleted: bool = False
    category: str | None = None
    start: datetime | None = None
    end: datetime | None = None


@runtime_checkable
class MemoryStore(Protocol):
    """Memories and messages, each owned by one user (``uid``)."""

    async def put(self, uid: str, memory: Memory) -> None:
        """Insert or replace ``memory`` (by its id) for ``uid``."""

    async def get(self, uid: str, memory_id: str) -> Memory | None:
        """The memory, deleted or not; ``None`` when ``uid`` has no memory with that id."""

    async def get_many(self, uid: str, memory_ids: Sequence[str]) -> list[Memory]:
        """The memories among ``memory_ids`` that exist and are not deleted, in the given order."""

    async def list(self, uid: str, query: MemoryQuery) -> list[Memory]:
        """A page of ``uid``'s memories, newest first; ``start``/``end`` bound ``created_at``."""

    async def list_json(self, uid: str, query: MemoryQuery) -> bytes:
        """The page :meth:`list` returns, encoded as the contract's JSON array.

        ``GET /v1/memories`` sends these bytes as they are: an adapter that keeps memories as
        JSON (SQLite) joins them without decoding, the hot path of the Omi app.
        """

    async def put_message(self, uid: str, message: Message) -> None:
        """Insert or replace a message for ``uid``."""

    async def list_messages(self, uid: str, limit: int = 100, offset: int = 0) -> builtins.list[Message]:
        """``uid``'s messages, newest first."""

    async def uids(self) -> builtins.list[str]:
        """Every user with at least one memory (deleted ones too) or message, sorted."""

    async def close(self) -> None:
        """Release connections."""


class VectorItem(msgspec.Struct, kw_only=True, frozen=True):
    """A vector to index: ``id`` is ``{uid}-{memory_id}``; ``created_at`` in unix seconds."""

    id: str
    values: list[float]
    uid: str
    memory_id: str
    created_at: int


class VectorMatch(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    memory_id: str
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """Semantic index of memories with metadata ``{uid, memory_id, created_at}``."""

    async def upsert(self, items: Sequence[VectorItem]) -> None:
        """Insert or replace each item by id."""

    async def query(
        self,
        vector: Vector,
        *,
        uid: str,
        top_k: int,
        start: int | None = None,
        end: int | None = None,
    ) -> list[VectorMatch]:
        """The ``top_k`` nearest of ``uid``'s vectors by cosine similarity, best first.

        ``start``/``end`` (unix seconds, inclusive) bound the items' ``created_at``.
        """

    async def delete(self, ids: Sequence[str]) -> None:
        """Remove exactly these ids; unknown ids are ignored."""

    async def close(self) -> None:
        """Release connections."""


@runtime_checkable
class BlobStore(Protocol):
    """Opaque files addressed by a relative path such as ``{uid}/speech_profile.wav``."""

    async def put(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` at ``path`` (replacing it) and return a URL for it."""

    async def get(self, path: str) -> bytes | None:
        """The stored bytes, or ``None``."""

    async def delete(self, path: str) -> None:
        """Remove ``path``; a missing path is not an error."""

    async def paths(self, prefix: str = "") -> list[str]:
        """Every stored path that starts with ``prefix``, sorted."""

    async def close(self) -> None:
        """Release connections."""


@runtime_checkable
class KeyValue(Protocol):
    """Small shared state: plugin state, reviews, tokens, caches, live-session journals.

    Values are strings (JSON by convention). Keys and fields are strings. ``ttl`` is in seconds.
    """

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None: ...

    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Set ``key`` only if it does not exist; ``True`` when it was set."""

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when it does not exist or never expires."""

    async def delete(self, *keys: str) -> int:
        """Delete the keys (of any kind); the number that existed."""

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer value (missing counts as 0) and return the result."""

    async def append(self, key: str, *values: str) -> int:
        """Append to the list at ``key``; the list's new length."""

    async def items(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        """Elements ``start``..``stop`` (inclusive, negative from the end) of the list at ``key``."""

    async def hset(self, key: str, field: str, value: str) -> None: ...

    async def hget(self, key: str, field: str) -> str | None: ...

    async def hgetall(self, key: str) -> dict[str, str]: ...

    async def hdel(self, key: str, *fields: str) -> int:
        """Delete fields of the hash at ``key``; the number that existed."""

    async def keys(self, prefix: str) -> list[str]:
        """Every live key that starts with ``prefix`` (any kind), sorted."""

    async def close(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """Text to unit-length float32 vectors."""

    @property
    def dimension(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """One L2-normalised row per text, shape ``(len(texts), dimension)``."""


@runtime_checkable
class LanguageModel(Protocol):
    """Structuring, discard decisions and plugin prompts."""

    async def should_discard(self, transcript: str) -> bool:
        """``True`` when the conversation holds nothing worth keeping."""

    async def structure(self, transcript: str, started_at: datetime, language: str | None) -> Structured:
        """Title, overview, emoji, category, action items and events of a conversation.

        Relative dates ("next Tuesday at three") resolve against ``started_at``.
        """

    async def run_prompt(self, prompt: str, transcript: str) -> str | None:
        """Answer a plugin's prompt about a transcript; ``None`` when this model cannot."""


SegmentsCallback = Callable[[list[TranscriptSegment]], Awaitable[None]]


class SpeechStream(Protocol):
    """One live transcription: audio in, final segments out through the callback.

    Audio is 16-bit little-endian mono PCM at the ``sample_rate`` the stream was opened with.
    Segment times are seconds from the first byte sent on this stream.
    """

    async def send(self, pcm: bytes) -> None:
        """Queue audio; never blocks on recognition (raises if the stream has failed for good)."""

    async def finish(self) -> None:
        """Flush: recognise what is buffered, deliver every remaining result, then end."""

    async def close(self) -> None:
        """Stop at once, dropping what has not been recognised."""


@runtime_checkable
class SpeechToText(Protocol):
    """A streaming speech-to-text engine."""

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> SpeechStream:
        """Start a stream; ``on_segments`` receives each final result (awaited in order)."""

    async def close(self) -> None:
        """Release the engine's resources (models, worker pools, connections)."""

"""The production :class:`~app.core.ports.MemoryStore`: Cloud Firestore through ``AsyncClient``.

Documents live at ``users/{uid}/memories/{id}`` and ``users/{uid}/messages/{id}`` as the
contract's JSON fields in Firestore-native values (datetimes are timestamps), plus ``category``,
a top-level copy of ``structured.category`` to filter on.

A transcript stays a native array while the document fits in Firestore's 1 MiB; else it is zlib
of the segments' JSON as bytes (``transcript_segments_compressed``); else those bytes are split
over ``users/{uid}/memories/{id}/transcript_chunks/{n}``. A write is one batch that sets the
memory and its chunks and deletes every other chunk slot: atomic, and nothing stale is left.
Chunks carry their write's ``transcript_gen``; a reader that caught a newer write reads again.

``list`` needs four composite indexes on ``memories`` in production (the emulator needs none;
``docs/firestore-indexes.json`` deploys them, ``__name__`` descending implied): deleted +
created_at desc; deleted + discarded + created_at desc; deleted + category + created_at desc;
deleted + discarded + category + created_at desc. That file also exempts the bulky fields
(transcripts, photos, free-form data, chunk bytes) from single-field indexing. A query with
``include_deleted`` and no other filter (what ``migrate`` sends) needs only the automatic
single-field index on ``created_at``.

Failures: transient errors are retried by the SDK's ``AsyncRetry`` until ``timeout``; what
still fails (the service unreachable, the deadline exceeded, credentials refused) is raised as
:class:`~app.core.errors.BackendUnavailable`, so the API answers 503.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import zlib
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar
from uuid import uuid4

import msgspec
from google.api_core import exceptions as gexc
from google.api_core.retry import if_exception_type
from google.api_core.retry_async import AsyncRetry
from google.auth import exceptions as auth_exceptions
from google.cloud.firestore import AsyncClient, AsyncDocumentReference, DocumentSnapshot
from google.cloud.firestore_v1.base_query import FieldFilter

from app.core.errors import BackendUnavailable
from app.core.models import Memory, Message, aware
from app.core.ports import MemoryQuery

__all__ = ["MAX_CHUNKS", "FirestoreMemoryStore"]

DOC_BUDGET = 1_000_000  # bytes of fields per document, under the 1 MiB limit that includes its name
CHUNK_BYTES = 900_000
# Chunk slots per memory: one commit holds a memory and all its chunks and must stay under the
# emulator's 4 MiB request limit (production's is 10 MiB): 2.7 MB compressed, ~100 hours of
# speech. Writes delete the slots they do not use, so this may grow but never shrink.
MAX_CHUNKS = 3
_CHUNKS = "transcript_chunks"
_GET_ALL_BATCH = 300
_READ_ATTEMPTS = 5
_memory_fields = frozenset(Memory.__struct_fields__)
# What says "Firestore cannot serve this now", after the retries: a 503, not a bug.
_OUTAGES = (
    gexc.RetryError,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.Aborted,
    gexc.Unauthenticated,
    gexc.PermissionDenied,
    gexc.ResourceExhausted,
    auth_exceptions.GoogleAuthError,
    TimeoutError,
)
P = ParamSpec("P")
R = TypeVar("R")


def _outage_is_unavailable(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Raise an outage of Firestore as ``BackendUnavailable("firestore")``."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except _OUTAGES as exc:
            raise BackendUnavailable("firestore", exc) from exc

    return call


def _size(value: Any) -> int:
    """The storage size Firestore counts for ``value`` (its documented rules)."""
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(len(k.encode()) + 1 + _size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 1 if value is None or isinstance(value, bool) else 8


def _reserved(name: str) -> bool:
    return not name or (name.startswith("__") and name.endswith("__"))


def _storable(value: Any, in_array: bool = False) -> bool:
    """Whether Firestore takes ``value`` as it is: no empty or ``__x__`` keys, no arrays in
    arrays, no integers beyond 64 bits."""
    if isinstance(value, dict):
        return all(not _reserved(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return not in_array and all(_storable(v, True) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**63
    return True


def _plain(value: Any) -> Any:
    """Firestore's values as msgspec takes them (its timestamps subclass datetime)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime) and type(value) is not datetime:
        v = value
        return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.tzinfo)
    return value


def _encode(memory: Memory) -> tuple[dict[str, Any], builtins.list[bytes]]:
    """The memory's document and the chunks its transcript needs beyond it (usually none)."""
    data: dict[str, Any] = msgspec.to_builtins(memory, builtin_types=(datetime,))
    segments = data.pop("transcript_segments")
    for key in ("external_data", "postprocessing"):  # free-form: kept as JSON text if need be
        if data[key] is not None and not _storable(data[key]):
            data[key] = msgspec.json.encode(data[key]).decode()
    data |= {"category": memory.structured.category, "transcript_gen": uuid4().hex, _CHUNKS: 0}
    data["transcript_segments_compressed"] = False
    base = _size(data) + _size("transcript_segments")
    if base > DOC_BUDGET:
        raise ValueError(f"memory {memory.id!r} is too large for a Firestore document without its transcript")
    if base + _size(segments) <= DOC_BUDGET:
        return data | {"transcript_segments": segments}, []
    packed = zlib.compress(msgspec.json.encode(segments))
    data["transcript_segments_compressed"] = True
    if base + len(packed) <= DOC_BUDGET:
        return data | {"transcript_segments": packed}, []
    chunks = [packed[i : i + CHUNK_BYTES] for i in range(0, len(packed), CHUNK_BYTES)]
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"transcript of {memory.id!r} is {len(packed)} bytes compressed, over the limit")
    return data | {"transcript_segments": b"", _CHUNKS: len(chunks)}, chunks


def _decode(data: dict[str, Any], packed: bytes | None) -> Memory:
    fields = {k: _plain(v) for k, v in data.items() if k in _memory_fields}
    for key in ("external_data", "postprocessing"):
        if isinstance(fields.get(key), str):
            fields[key] = msgspec.json.decode(fields[key])
    if data.get("transcript_segments_compressed"):
        fields["transcript_segments"] = msgspec.json.decode(zlib.decompress(packed or b""))
    return msgspec.convert(fields, Memory)


def _valid_id(value: str) -> bool:
    """Whether Firestore accepts ``value`` as a document id."""
    return not _reserved(value) and "/" not in value and value not in (".", "..") and len(value) <= 1500


class FirestoreMemoryStore:
    """Memories and messages in Cloud Firestore.

    Args:
        project: The Google Cloud project (unused when ``client`` is given).
        database: The Firestore database id (likewise).
        client: A client to use instead of one made here; the caller closes it.
        timeout: Seconds each call may take; retries of transient errors stop after as many.
    """

    def __init__(
        self,
        project: str,
        database: str = "(default)",
        client: AsyncClient | None = None,
        timeout: float = 20.0,
    ) -> None:
        self._owned, self._closed = client is None, False
        self._db = client if client is not None else AsyncClient(project=project, database=database)
        transient = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.Aborted)
        retry = AsyncRetry(predicate=if_exception_type(*transient), timeout=timeout)
        self._opts: dict[str, Any] = {"retry": retry, "timeout": timeout}

    def _user(self, uid: str, kind: str, doc_id: str) -> AsyncDocumentReference:
        if not (_valid_id(uid) and _valid_id(doc_id)):
            raise ValueError(f"invalid Firestore id: {uid!r}/{doc_id!r}")
        return self._db.collection("users", uid, kind).document(doc_id)

    async def _read(self, ref: AsyncDocumentReference) -> DocumentSnapshot[AsyncDocumentReference]:
        # Not ``ref.get()``: it returns before its stream ends, leaving a gRPC call open.
        snapshots = [s async for s in self._db.get_all([ref], **self._opts)]
        return snapshots[0]

    async def _chunks(self, ref: AsyncDocumentReference, data: dict[str, Any]) -> bytes | None:
        refs = [ref.collection(_CHUNKS).document(str(n)) for n in range(data[_CHUNKS])]
        found = {s.id: s.to_dict() async for s in self._db.get_all(refs, **self._opts) if s.exists}
        parts = [found.get(r.id) for r in refs]
        if any(p is None or p.get("gen") != data["transcript_gen"] for p in parts):
            return None
        return b"".join(p["data"] for p in parts if p is not None)

    async def _load(self, snap: DocumentSnapshot[AsyncDocumentReference]) -> Memory | None:
        for _ in range(_READ_ATTEMPTS):
            data = snap.to_dict()
            if data is None:
                return None
            packed = data.get("transcript_segments")
            if data.get(_CHUNKS):
                packed = await self._chunks(snap.reference, data)
                if packed is None:  # a newer write landed between the two reads
                    snap = await self._read(snap.reference)
                    continue
            return _decode(data, packed)
        raise RuntimeError(f"transcript of {snap.reference.path} kept changing while being read")

    @_outage_is_unavailable
    async def put(self, uid: str, memory: Memory) -> None:
        """Insert or replace ``memory`` (by its id) for ``uid``, with its chunks, atomically."""
        data, chunks = _encode(memory)
        ref = self._user(uid, "memories", memory.id)
        batch = self._db.batch()
        batch.set(ref, data)
        for n in range(MAX_CHUNKS):
            slot = ref.collection(_CHUNKS).document(str(n))
            if n < len(chunks):
                batch.set(slot, {"gen": data["transcript_gen"], "data": chunks[n]})
            else:
                batch.delete(slot)
        await batch.commit(**self._opts)

    @_outage_is_unavailable
    async def get(self, uid: str, memory_id: str) -> Memory | None:
        """The memory, deleted or not; ``None`` when ``uid`` has no memory with that id."""
        if not (_valid_id(uid) and _valid_id(memory_id)):
            return None
        return await self._load(await self._read(self._user(uid, "memories", memory_id)))

    @_outage_is_unavailable
    async def get_many(self, uid: str, memory_ids: Sequence[str]) -> builtins.list[Memory]:
        """The memories among ``memory_ids`` that exist and are not deleted, in the given order."""
        ids = [i for i in dict.fromkeys(memory_ids) if _valid_id(i)] if _valid_id(uid) else []
        refs = [self._user(uid, "memories", i) for i in ids]
        snaps: dict[str, DocumentSnapshot[AsyncDocumentReference]] = {}
        for start in range(0, len(refs), _GET_ALL_BATCH):
            batch = refs[start : start + _GET_ALL_BATCH]
            snaps.update({s.id: s async for s in self._db.get_all(batch, **self._opts) if s.exists})
        found = await asyncio.gather(*(self._load(snaps[i]) for i in ids if i in snaps))
        return [m for m in found if m is not None and not m.deleted]

    @_outage_is_unavailable
    async def list(self, uid: str, query: MemoryQuery) -> builtins.list[Memory]:
        """A page of ``uid``'s memories, newest ``created_at`` first (ties by id), deleted ones if asked."""
        if query.limit <= 0 or not _valid_id(uid):
            return []
        q: Any = self._db.collection("users", uid, "memories")
        if not query.include_deleted:
            q = q.where(filter=FieldFilter("deleted", "==", False))
        if not query.include_discarded:
            q = q.where(filter=FieldFilter("discarded", "==", False))
        if query.category is not None:
            q = q.where(filter=FieldFilter("category", "==", query.category))
        if query.start is not None:
            q = q.where(filter=FieldFilter("created_at", ">=", aware(query.start)))
        if query.end is not None:
            q = q.where(filter=FieldFilter("created_at", "<=", aware(query.end)))
        q = q.order_by("created_at", direction="DESCENDING").order_by("__name__", direction="DESCENDING")
        snaps = await q.offset(max(query.offset, 0)).limit(query.limit).get(**self._opts)
        return [m for m in await asyncio.gather(*map(self._load, snaps)) if m is not None]

    async def list_json(self, uid: str, query: MemoryQuery) -> bytes:
        """The page as the contract's JSON array."""
        return msgspec.json.encode(await self.list(uid, query))

    @_outage_is_unavailable
    async def put_message(self, uid: str, message: Message) -> None:
        """Insert or replace a message (by its id) for ``uid``."""
        data = msgspec.to_builtins(message, builtin_types=(datetime,))
        await self._user(uid, "messages", message.id).set(data, **self._opts)

    @_outage_is_unavailable
    async def list_messages(self, uid: str, limit: int = 100, offset: int = 0) -> builtins.list[Message]:
        """``uid``'s messages, newest ``created_at`` first (ties by id, descending)."""
        if limit <= 0 or not _valid_id(uid):
            return []
        q = self._db.collection("users", uid, "messages").order_by("created_at", direction="DESCENDING")
        q = q.order_by("__name__", direction="DESCENDING").offset(max(offset, 0)).limit(limit)
        return [msgspec.convert(_plain(s.to_dict()), Message) for s in await q.get(**self._opts)]

    @_outage_is_unavailable
    async def uids(self) -> builtins.list[str]:
        """Every user with a memory or a message, sorted.

        The ``users/{uid}`` documents are never written: they are listed as the (missing)
        parents of those collections.
        """
        found = [ref.id async for ref in self._db.collection("users").list_documents(**self._opts)]
        return sorted(found)

    async def close(self) -> None:
        """Close the client's channel if this store made the client; closing twice is harmless."""
        api = getattr(self._db, "_firestore_api_internal", None)  # the gRPC client, made on first use
        if self._owned and not self._closed and api is not None:
            await api.transport.close()
        self._closed = True

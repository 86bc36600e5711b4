"""The embedded :class:`~app.core.ports.MemoryStore`: memories and messages in one SQLite file.

Each memory is kept as its msgspec JSON next to the few columns that listing filters and
sorts on. ``created_at`` is stored as integer microseconds since the epoch, so ordering and
the inclusive ``start``/``end`` bounds are exact. Ties on ``created_at`` are broken by id,
descending, which is also the order Firestore gives a descending query.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from app.backends.sqlite_db import SQLiteDB
from app.core.models import Memory, Message, aware
from app.core.ports import MemoryQuery

__all__ = ["SQLiteMemoryStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    uid TEXT NOT NULL,
    id TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    category TEXT NOT NULL,
    discarded INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    json BLOB NOT NULL,
    PRIMARY KEY (uid, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memories_by_time ON memories (uid, deleted, created_us DESC, id DESC);
CREATE TABLE IF NOT EXISTS messages (
    uid TEXT NOT NULL,
    id TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    json BLOB NOT NULL,
    PRIMARY KEY (uid, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (uid, created_us DESC, id DESC);
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHUNK = 500  # ids per IN (...) clause, well under SQLite's variable limit
_memory_decoder = msgspec.json.Decoder(Memory)
_message_decoder = msgspec.json.Decoder(Message)


def _micros(value: datetime) -> int:
    """``value`` as exact integer microseconds since the epoch (naive is taken as UTC)."""
    delta = aware(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _put(conn: sqlite3.Connection, uid: str, memory: Memory) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO memories (uid, id, created_us, category, discarded, deleted, json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            uid,
            memory.id,
            _micros(memory.created_at),
            memory.structured.category,
            int(memory.discarded),
            int(memory.deleted),
            msgspec.json.encode(memory),
        ),
    )


def _get(conn: sqlite3.Connection, uid: str, memory_id: str) -> bytes | None:
    row = conn.execute("SELECT json FROM memories WHERE uid = ? AND id = ?", (uid, memory_id)).fetchone()
    return None if row is None else bytes(row[0])


def _get_many(conn: sqlite3.Connection, uid: str, ids: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, json FROM memories WHERE uid = ? AND deleted = 0 AND id IN ({marks})"  # noqa: S608
        found.update((row[0], bytes(row[1])) for row in conn.execute(sql, (uid, *chunk)))
    return found


def _list(conn: sqlite3.Connection, uid: str, query: MemoryQuery) -> list[bytes]:
    where = ["uid = ?"] if query.include_deleted else ["uid = ?", "deleted = 0"]
    args: list[Any] = [uid]
    if not query.include_discarded:
        where.append("discarded = 0")
    if query.category is not None:
        where.append("category = ?")
        args.append(query.category)
    if query.start is not None:
        where.append("created_us >= ?")
        args.append(_micros(query.start))
    if query.end is not None:
        where.append("created_us <= ?")
        args.append(_micros(query.end))
    sql = (
        f"SELECT json FROM memories WHERE {' AND '.join(where)}"  # noqa: S608 (fixed fragments only)
        " ORDER BY created_us DESC, id DESC LIMIT ? OFFSET ?"
    )
    rows = conn.execute(sql, (*args, query.limit, max(query.offset, 0))).fetchall()
    return [bytes(row[0]) for row in rows]


def _put_message(conn: sqlite3.Connection, uid: str, message: Message) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO messages (uid, id, created_us, json) VALUES (?, ?, ?, ?)",
        (uid, message.id, _micros(message.created_at), msgspec.json.encode(message)),
    )


def _list_messages(conn: sqlite3.Connection, uid: str, limit: int, offset: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT json FROM messages WHERE uid = ? ORDER BY created_us DESC, id DESC LIMIT ? OFFSET ?",
        (uid, limit, offset),
    ).fetchall()
    return [bytes(row[0]) for row in rows]


def _uids(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT uid FROM memories UNION SELECT uid FROM messages ORDER BY uid")
    return [str(row[0]) for row in rows]


class SQLiteMemoryStore:
    """Memories and messages in a WAL-mode SQLite file, all SQL on the database's own thread.

    Args:
        path: The database file; created (with its directory) on first use.
    """

    def __init__(self, path: Path) -> None:
        self._db = SQLiteDB(path, SCHEMA)
        self._closed = False

    async def put(self, uid: str, memory: Memory) -> None:
        """Insert or replace ``memory`` (by its id) for ``uid``."""
        await self._db.run(_put, uid, memory)

    async def get(self, uid: str, memory_id: str) -> Memory | None:
        """The memory, deleted or not; ``None`` when ``uid`` has no memory with that id."""
        raw = await self._db.run(_get, uid, memory_id)
        return None if raw is None else _memory_decoder.decode(raw)

    async def get_many(self, uid: str, memory_ids: Sequence[str]) -> builtins.list[Memory]:
        """The memories among ``memory_ids`` that exist and are not deleted, in the given order.

        An id asked for twice is returned once, at its first position.
        """
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return []
        found = await self._db.run(_get_many, uid, ids)
        return [_memory_decoder.decode(found[i]) for i in ids if i in found]

    async def list(self, uid: str, query: MemoryQuery) -> builtins.list[Memory]:
        """A page of ``uid``'s memories (not deleted ones, unless asked), newest ``created_at`` first.

        ``start``/``end`` bound ``created_at`` inclusively; ties are ordered by id, descending.
        """
        if query.limit <= 0:
            return []
        rows = await self._db.run(_list, uid, query)
        return [_memory_decoder.decode(raw) for raw in rows]

    async def list_json(self, uid: str, query: MemoryQuery) -> bytes:
        """The page as a JSON array, joined from the stored JSON without decoding it."""
        if query.limit <= 0:
            return b"[]"
        return b"[" + b",".join(await self._db.run(_list, uid, query)) + b"]"

    async def put_message(self, uid: str, message: Message) -> None:
        """Insert or replace a message (by its id) for ``uid``."""
        await self._db.run(_put_message, uid, message)

    async def list_messages(self, uid: str, limit: int = 100, offset: int = 0) -> builtins.list[Message]:
        """``uid``'s messages, newest ``created_at`` first (ties by id, descending)."""
        if limit <= 0:
            return []
        rows = await self._db.run(_list_messages, uid, limit, max(offset, 0))
        return [_message_decoder.decode(raw) for raw in rows]

    async def uids(self) -> builtins.list[str]:
        """Every user with a memory (deleted ones too) or a message, sorted."""
        return await self._db.run(_uids)

    async def close(self) -> None:
        """Close the database; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            await self._db.close()

"""The embedded :class:`~app.core.ports.KeyValue`: Redis semantics over three SQLite tables.

Strings (with an optional expiry, unix seconds), lists and hashes live in their own tables;
a key holds one kind at a time. Expired strings are invisible at once and purged lazily (on
the next touch of the key, or by ``keys``). Where Redis answers ``WRONGTYPE`` this raises
``TypeError``; where it refuses a value as not an integer, or an overflow, ``ValueError``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from app.backends.sqlite_db import SQLiteDB

__all__ = ["SQLiteKeyValue"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS strings (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS strings_by_expiry ON strings (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS lists (
    key TEXT NOT NULL, idx INTEGER NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hashes (
    key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key, field)
) WITHOUT ROWID;
"""

_TABLES = ("strings", "lists", "hashes")
_KINDS = {"strings": "string", "lists": "list", "hashes": "hash"}
_INTEGER = re.compile(r"0|-?[1-9][0-9]*")  # what Redis accepts as an integer value
_INT64 = range(-(2**63), 2**63)


def _kind(conn: sqlite3.Connection, key: str) -> str | None:
    """The kind of ``key`` ("strings", "lists", "hashes") after purging it if expired."""
    conn.execute("DELETE FROM strings WHERE key = ? AND expires_at <= ?", (key, time.time()))
    for table in _TABLES:
        if conn.execute(f"SELECT 1 FROM {table} WHERE key = ? LIMIT 1", (key,)).fetchone():  # noqa: S608
            return table
    return None


def _expect(conn: sqlite3.Connection, key: str, table: str) -> bool:
    """Whether ``key`` exists; ``TypeError`` when it holds another kind (Redis's WRONGTYPE)."""
    found = _kind(conn, key)
    if found is not None and found != table:
        raise TypeError(f"key {key!r} holds a {_KINDS[found]}, not a {_KINDS[table]}")
    return found is not None


def _drop(conn: sqlite3.Connection, key: str) -> bool:
    existed = _kind(conn, key) is not None
    for table in _TABLES:
        conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))  # noqa: S608
    return existed


def _get(conn: sqlite3.Connection, key: str) -> str | None:
    if not _expect(conn, key, "strings"):
        return None
    return str(conn.execute("SELECT value FROM strings WHERE key = ?", (key,)).fetchone()[0])


def _set(conn: sqlite3.Connection, key: str, value: str, ttl: float | None, only_new: bool) -> bool:
    if only_new and _kind(conn, key) is not None:
        return False
    _drop(conn, key)
    expires = None if ttl is None else time.time() + ttl
    conn.execute("INSERT INTO strings (key, value, expires_at) VALUES (?, ?, ?)", (key, value, expires))
    return True


def _ttl(conn: sqlite3.Connection, key: str) -> float | None:
    _kind(conn, key)  # purges the key if it has expired
    row = conn.execute("SELECT expires_at FROM strings WHERE key = ?", (key,)).fetchone()
    return None if row is None or row[0] is None else max(float(row[0]) - time.time(), 0.001)


def _incr(conn: sqlite3.Connection, key: str, amount: int) -> int:
    if not _expect(conn, key, "strings"):
        conn.execute("INSERT INTO strings (key, value) VALUES (?, '0')", (key,))
    value = str(conn.execute("SELECT value FROM strings WHERE key = ?", (key,)).fetchone()[0])
    if not _INTEGER.fullmatch(value) or int(value) not in _INT64:
        raise ValueError(f"the value at {key!r} is not an integer or out of range")
    result = int(value) + amount
    if result not in _INT64:
        raise ValueError("increment or decrement would overflow")
    conn.execute("UPDATE strings SET value = ? WHERE key = ?", (str(result), key))  # keeps the expiry
    return result


def _append(conn: sqlite3.Connection, key: str, values: tuple[str, ...]) -> int:
    _expect(conn, key, "lists")
    length = int(conn.execute("SELECT count(*) FROM lists WHERE key = ?", (key,)).fetchone()[0])
    conn.executemany(
        "INSERT INTO lists (key, idx, value) VALUES (?, ?, ?)",
        [(key, length + i, value) for i, value in enumerate(values)],
    )
    return length + len(values)


def _items(conn: sqlite3.Connection, key: str, start: int, stop: int) -> list[str]:
    if not _expect(conn, key, "lists"):
        return []
    length = int(conn.execute("SELECT count(*) FROM lists WHERE key = ?", (key,)).fetchone()[0])
    # LRANGE's arithmetic: negative indexes count from the end, then clamp to the list.
    start = max(start + length if start < 0 else start, 0)
    stop = min(stop + length if stop < 0 else stop, length - 1)
    if start > stop:
        return []
    rows = conn.execute(
        "SELECT value FROM lists WHERE key = ? AND idx BETWEEN ? AND ? ORDER BY idx", (key, start, stop)
    )
    return [str(row[0]) for row in rows]


def _hset(conn: sqlite3.Connection, key: str, field: str, value: str) -> None:
    _expect(conn, key, "hashes")
    conn.execute("INSERT OR REPLACE INTO hashes (key, field, value) VALUES (?, ?, ?)", (key, field, value))


def _hgetall(conn: sqlite3.Connection, key: str) -> dict[str, str]:
    if not _expect(conn, key, "hashes"):
        return {}
    return dict(conn.execute("SELECT field, value FROM hashes WHERE key = ?", (key,)).fetchall())


def _hget(conn: sqlite3.Connection, key: str, field: str) -> str | None:
    if not _expect(conn, key, "hashes"):
        return None
    row = conn.execute("SELECT value FROM hashes WHERE key = ? AND field = ?", (key, field)).fetchone()
    return None if row is None else str(row[0])


def _hdel(conn: sqlite3.Connection, key: str, fields: tuple[str, ...]) -> int:
    _expect(conn, key, "hashes")
    sql = "DELETE FROM hashes WHERE key = ? AND field = ?"
    return sum(conn.execute(sql, (key, field)).rowcount for field in dict.fromkeys(fields))


def _prefix_end(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (``None``: none).

    SQLite compares text as UTF-8 bytes, which is code point order, so bumping the last code
    point that can be bumped gives an exact upper bound for a range scan.
    """
    while prefix:
        last = ord(prefix[-1]) + 1
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(0xE000 if 0xD800 <= last <= 0xDFFF else last)
        prefix = prefix[:-1]
    return None


def _keys(conn: sqlite3.Connection, prefix: str) -> list[str]:
    conn.execute("DELETE FROM strings WHERE expires_at <= ?", (time.time(),))
    end = _prefix_end(prefix)
    bound = "key >= ?" if end is None else "key >= ? AND key < ?"
    args = (prefix,) if end is None else (prefix, end)
    sql = " UNION ".join(f"SELECT key FROM {table} WHERE {bound}" for table in _TABLES)  # noqa: S608
    return sorted(str(row[0]) for row in conn.execute(sql, args * len(_TABLES)))


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


class SQLiteKeyValue:
    """Strings, lists and hashes in one SQLite file, with Redis's semantics for each call.

    Args:
        path: The database file; created (with its directory) on first use.
    """

    def __init__(self, path: Path) -> None:
        self._db = SQLiteDB(path, SCHEMA)
        self._closed = False

    async def get(self, key: str) -> str | None:
        """The string at ``key``, or ``None`` when it is missing or expired."""
        return await self._db.run(_get, key)

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Store a string, replacing ``key`` whatever it held; ``ttl`` seconds from now it expires."""
        _check_ttl(ttl)
        await self._db.run(_set, key, value, ttl, only_new=False)

    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Set ``key`` only if it does not exist; ``True`` when it was set."""
        _check_ttl(ttl)
        return await self._db.run(_set, key, value, ttl, only_new=True)

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when it does not exist or never expires."""
        return await self._db.run(_ttl, key)

    async def delete(self, *keys: str) -> int:
        """Delete the keys (of any kind); the number that existed."""
        return sum(await self._db.run(lambda conn: [_drop(conn, key) for key in keys]))

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer value (missing counts as 0) and return the result."""
        return await self._db.run(_incr, key, amount)

    async def append(self, key: str, *values: str) -> int:
        """Append to the list at ``key``; the list's new length."""
        return await self._db.run(_append, key, values)

    async def items(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        """Elements ``start``..``stop`` (inclusive, negative from the end) of the list at ``key``."""
        return await self._db.run(_items, key, start, stop)

    async def hset(self, key: str, field: str, value: str) -> None:
        """Set one field of the hash at ``key``."""
        await self._db.run(_hset, key, field, value)

    async def hget(self, key: str, field: str) -> str | None:
        """One field of the hash at ``key``, or ``None``."""
        return await self._db.run(_hget, key, field)

    async def hgetall(self, key: str) -> dict[str, str]:
        """Every field of the hash at ``key`` (empty when it is missing)."""
        return await self._db.run(_hgetall, key)

    async def hdel(self, key: str, *fields: str) -> int:
        """Delete fields of the hash at ``key``; the number that existed."""
        return await self._db.run(_hdel, key, fields) if fields else 0

    async def keys(self, prefix: str) -> list[str]:
        """Every live key that starts with ``prefix`` (any kind), sorted."""
        return await self._db.run(_keys, prefix)

    async def close(self) -> None:
        """Close the database; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            await self._db.close()

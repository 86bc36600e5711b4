"""One SQLite database driven from a dedicated thread, so no call blocks the event loop.

Every embedded adapter that keeps rows in SQLite owns one :class:`SQLiteDB`. The connection
lives on a single worker thread (SQLite connections are not to be shared across threads);
``await db.run(fn, ...)`` runs ``fn(connection, ...)`` there inside a transaction.

A transaction that writes is refused whole with :class:`~app.core.errors.StorageFull` when
the disk is (nearly) full (see :mod:`app.backends.diskspace`); reads go on working.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from app.backends.diskspace import check_room, storage_error

__all__ = ["SQLiteDB"]

P = ParamSpec("P")
T = TypeVar("T")


class SQLiteDB:
    """A WAL-mode SQLite file whose connection belongs to one worker thread."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(self._schema)
            self._conn = conn
        return self._conn

    def _transaction(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        try:
            return self._attempt(fn, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            full = storage_error(self.path.name, exc)
            if full is None:
                raise
            raise full from exc

    def _attempt(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        changes = conn.total_changes
        try:
            result = fn(conn, *args, **kwargs)
            if conn.total_changes != changes:  # a write: refused, whole, if it would fill the disk
                check_room(self.path.parent, self.path.name)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        return result

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """Undo what is left of a failed transaction (SQLite rolls back some failures itself,
        e.g. a COMMIT that found the disk full); a connection that cannot be is dropped."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if conn.in_transaction:  # never leave the next BEGIN to fail forever
            conn.close()
            self._conn = None

    async def run(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` in one transaction on the database's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._transaction(fn, *args, **kwargs))

    def run_sync(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like :meth:`run`, for code that is not on an event loop (the CLI, start-up)."""
        return self._executor.submit(lambda: self._transaction(fn, *args, **kwargs)).result()

    async def close(self) -> None:
        """Close the connection and stop the worker thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

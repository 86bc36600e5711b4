"""Room on the data directory's disk, for the embedded stores (SQLite files and blob files).

A full disk is met early and cleanly: a write that would leave less than
:data:`RESERVE_BYTES` free is refused with :class:`~app.core.errors.StorageFull` before it
reaches the file, so the stores never run a transaction into ``ENOSPC`` halfway and SQLite
keeps room to checkpoint its write-ahead log. The errors the system gives anyway (another
process filled the disk in between, a quota, a file-size limit) are turned into the same
exception by :func:`storage_error`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from app.core.errors import StorageFull

__all__ = ["RESERVE_BYTES", "check_room", "free_bytes", "storage_error"]

RESERVE_BYTES = 1024 * 1024
"""Writes are refused while less than this is free on the data directory's disk."""

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# SQLite's "database or disk is full", and the write-side I/O errors a file-size limit
# (EFBIG, which SQLite reports as an I/O error, not as SQLITE_FULL) or a quota gives.
_SQLITE_FULL = 13
_SQLITE_WRITE_ERRORS = frozenset(
    {
        778,  # SQLITE_IOERR_WRITE
        1034,  # SQLITE_IOERR_FSYNC
        1546,  # SQLITE_IOERR_TRUNCATE
        4874,  # SQLITE_IOERR_SHMSIZE
    }
)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the disk that holds ``path`` (a directory)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_room(directory: Path, store: str, size: int = 0) -> None:
    """Refuse (``StorageFull``) a write of ``size`` bytes that would eat into the reserve."""
    try:
        left = free_bytes(directory)
    except OSError:  # a filesystem that cannot tell: let the write itself find out
        return
    if left - size < RESERVE_BYTES:
        raise StorageFull(store, f"{left} bytes free, the server keeps {RESERVE_BYTES} in reserve")


def storage_error(store: str, exc: BaseException) -> StorageFull | None:
    """``exc`` as a :class:`StorageFull` when it means there is no room; ``None`` otherwise."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code == _SQLITE_FULL or code in _SQLITE_WRITE_ERRORS:
            return StorageFull(store, f"{getattr(exc, 'sqlite_errorname', 'sqlite error')}: {exc}")
        return None
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return StorageFull(store, f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror}")
    return None

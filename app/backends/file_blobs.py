"""The embedded :class:`~app.core.ports.BlobStore`: one file per blob under a root directory.

Writes are atomic (a temporary file in the same directory, then ``os.replace``), so a reader
sees the old bytes or the new ones, never half. A write that does not fit on the disk (or
would eat into its reserve, :mod:`app.backends.diskspace`) raises
:class:`~app.core.errors.StorageFull` and leaves nothing behind. All file I/O runs in a
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from app.backends.diskspace import check_room, storage_error

__all__ = ["FileBlobStore", "check_blob_path"]


def check_blob_path(path: str) -> list[str]:
    """The segments of a blob path, after refusing anything that could leave the store.

    Args:
        path: A relative, ``/``-separated path such as ``alice/speech_profile.wav``.

    Returns:
        Its segments.

    Raises:
        ValueError: The path is empty or absolute, has an empty, ``.`` or ``..`` segment,
            or holds a backslash or a NUL character.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or ".." in path:
        raise ValueError(f"invalid blob path {path!r}")
    segments = path.split("/")
    if any(segment in ("", ".") for segment in segments):
        raise ValueError(f"invalid blob path {path!r}")
    return segments


class FileBlobStore:
    """Blobs as files under ``root``; ``put`` answers with the file's ``file://`` URL.

    ``content_type`` is accepted for the port's sake and not recorded.

    Args:
        root: The directory holding the blobs; created on first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def _file(self, path: str) -> Path:
        target = self.root.joinpath(*check_blob_path(path))
        # A symlink planted under the root must not lead out of it (checked off the loop).
        if not target.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"invalid blob path {path!r}")
        return target

    def _write(self, path: str, data: bytes) -> str:
        try:
            return self._write_file(path, data)
        except OSError as exc:
            full = storage_error("blobs", exc)
            if full is None:
                raise
            raise full from exc

    def _write_file(self, path: str, data: bytes) -> str:
        target = self._file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        check_room(target.parent, "blobs", len(data))
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return target.as_uri()

    def _read(self, path: str) -> bytes | None:
        try:
            return self._file(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _walk(self, prefix: str) -> list[str]:
        found, real_root = [], self.root.resolve()
        for folder, _, files in os.walk(self.root):  # symlinked folders are not entered
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):  # a write in progress
                    continue
                path = name if rel == "." else f"{rel}/{name}"
                if path.startswith(prefix) and (Path(folder) / name).resolve().is_relative_to(real_root):
                    found.append(path)
        return sorted(found)

    def _remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._file(path).unlink()

    async def put(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` at ``path`` (replacing it) and return its ``file://`` URL.

        Raises:
            ValueError: ``path`` is not a safe relative path (see :func:`check_blob_path`).
            StorageFull: there is no room for it on the disk.
        """
        check_blob_path(path)
        return await asyncio.to_thread(self._write, path, data)

    async def get(self, path: str) -> bytes | None:
        """The stored bytes, or ``None``."""
        check_blob_path(path)
        return await asyncio.to_thread(self._read, path)

    async def delete(self, path: str) -> None:
        """Remove ``path``; a missing path is not an error."""
        check_blob_path(path)
        await asyncio.to_thread(self._remove, path)

    async def paths(self, prefix: str = "") -> list[str]:
        """Every stored path that starts with ``prefix``, sorted."""
        return await asyncio.to_thread(self._walk, prefix)

    async def close(self) -> None:
        """Nothing to release."""

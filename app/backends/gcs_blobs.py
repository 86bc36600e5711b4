"""The production :class:`~app.core.ports.BlobStore`: objects in a Google Cloud Storage bucket.

``google-cloud-storage`` is synchronous, so every call runs in a worker thread. A blob at
``alice/speech_profile.wav`` is the object ``{prefix}alice/speech_profile.wav``; ``put`` answers
with its ``gs://bucket/object`` URL. Paths are checked exactly as the file store checks them.
An upload replaces the object in one step: readers see the old bytes or the new ones.

Failures: transient errors are retried (``DEFAULT_RETRY``) until ``timeout``; what still
fails (unreachable, the deadline passed, credentials refused, a 5xx) is raised as
:class:`~app.core.errors.BackendUnavailable`, so the API answers 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc
from google.api_core.exceptions import NotFound
from google.auth import exceptions as auth_exceptions
from google.cloud.storage import Blob, Client
from google.cloud.storage.retry import DEFAULT_RETRY

from app.backends.file_blobs import check_blob_path
from app.core.errors import BackendUnavailable

__all__ = ["GCSBlobStore"]

T = TypeVar("T")
_OUTAGES = (
    gexc.RetryError,
    gexc.ServerError,
    gexc.TooManyRequests,
    gexc.Unauthorized,
    gexc.Forbidden,
    auth_exceptions.GoogleAuthError,
    requests.ConnectionError,
    requests.Timeout,
)


class GCSBlobStore:
    """Blobs as objects in one bucket, under an optional prefix.

    Args:
        bucket: The bucket's name; it must exist.
        client: A client to use instead of ``Client()`` (which finds the application
            default credentials, a blocking look-up done here, once); the caller closes it.
        prefix: A folder inside the bucket for every object, such as ``omi/``.
        timeout: Seconds each HTTP request may take; retries of transient errors (uploads
            included: a blob is replaced whole, so repeating one is harmless) stop after as many.
    """

    def __init__(
        self, bucket: str, client: Client | None = None, prefix: str = "", timeout: float = 30.0
    ) -> None:
        self._owned = client is None
        self._client = client if client is not None else Client()
        self._bucket = self._client.bucket(bucket)
        stripped = prefix.strip("/")
        if stripped:
            check_blob_path(stripped)
        self._prefix = f"{stripped}/" if stripped else ""
        self._timeout = timeout
        self._retry = DEFAULT_RETRY.with_timeout(timeout)
        self._closed = False

    def _blob(self, path: str) -> Blob:
        segments = check_blob_path(path)
        if "\r" in path or "\n" in path:  # object names may not hold them
            raise ValueError(f"invalid blob path {path!r}")
        return self._bucket.blob(self._prefix + "/".join(segments))

    def _upload(self, blob: Blob, data: bytes, content_type: str) -> None:
        blob.upload_from_string(data, content_type=content_type, timeout=self._timeout, retry=self._retry)

    def _download(self, blob: Blob) -> bytes | None:
        try:
            data: bytes = blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
        except NotFound:
            return None
        return data

    def _delete(self, blob: Blob) -> None:
        with contextlib.suppress(NotFound):
            blob.delete(timeout=self._timeout, retry=self._retry)

    def _list(self, prefix: str) -> list[str]:
        blobs = self._client.list_blobs(
            self._bucket, prefix=self._prefix + prefix, timeout=self._timeout, retry=self._retry
        )
        return sorted(blob.name.removeprefix(self._prefix) for blob in blobs)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)`` in a worker thread; an outage raised as ``BackendUnavailable``."""
        try:
            return await asyncio.to_thread(call, *args)
        except _OUTAGES as exc:
            raise BackendUnavailable("gcs", exc) from exc

    async def put(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` at ``path`` (replacing it) and return its ``gs://`` URL.

        Raises:
            ValueError: ``path`` is not a safe relative path (see ``check_blob_path``).
        """
        blob = self._blob(path)
        await self._run(self._upload, blob, data, content_type)
        return f"gs://{self._bucket.name}/{blob.name}"

    async def get(self, path: str) -> bytes | None:
        """The stored bytes, or ``None``."""
        return await self._run(self._download, self._blob(path))

    async def delete(self, path: str) -> None:
        """Remove ``path``; a missing path is not an error."""
        await self._run(self._delete, self._blob(path))

    async def paths(self, prefix: str = "") -> list[str]:
        """Every stored path that starts with ``prefix``, sorted."""
        return await self._run(self._list, prefix)

    async def close(self) -> None:
        """Close the client's HTTP session if this store made the client; twice is harmless."""
        if self._owned and not self._closed:
            self._closed = True
            await asyncio.to_thread(self._client.close)

"""The production :class:`~app.core.ports.VectorIndex`: a Pinecone serverless index (cosine).

Talks to the index's data plane over REST through the ``pinecone`` SDK's ``AsyncIndex``,
addressed by host (``https://<index>-<project>.svc.<region>.pinecone.io``), so no
control-plane lookup is made. Every vector is ``{uid}-{memory_id}`` with metadata
``{uid, memory_id, created_at}`` (``created_at`` in unix seconds), so a query filters on
``uid`` and, when asked, ``created_at``; a delete names the exact ids.

Failures: a request that gets a 408, 429 or 5xx answer, times out or cannot connect is
tried again (``tries`` times in all, exponential backoff with jitter, a 429's
``Retry-After`` honoured up to 10 s); when the last try fails, or the service refuses
the key, :class:`~app.core.errors.BackendUnavailable` is raised. A request the index
rejects as malformed (a 400, e.g. a vector of the wrong dimension) is a ``ValueError``.
The SDK's own transport retries are switched off, so that policy is the only one (the
SDK does not expose a data-plane retry setting; without this every try would be four).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np
from pinecone import AsyncIndex, PineconeConfig, RetryConfig
from pinecone.errors.exceptions import (
    ApiError,
    PineconeConnectionError,
    PineconeError,
    PineconeTimeoutError,
    RateLimitError,
)

from app.core.errors import BackendUnavailable
from app.core.ports import Vector, VectorItem, VectorMatch

__all__ = ["PineconeVectorIndex"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKEND = "pinecone"
MAX_IDS_PER_REQUEST = 1000  # the data plane's limit for upsert and delete
MAX_UPSERT_BYTES = 2_000_000  # the data plane's limit on a request body
MAX_TOP_K = 10_000
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 10.0


def _without_sdk_retries(index: AsyncIndex) -> None:
    """Make the SDK's HTTP transport try each request once; this adapter retries instead."""
    http = getattr(index, "_http", None)
    config = getattr(http, "_config", None)
    if isinstance(config, PineconeConfig) and getattr(http, "_client", None) is None:
        http._config = dataclasses.replace(config, retry_config=RetryConfig(max_retries=0))  # type: ignore[union-attr]
    else:  # a newer SDK: tries multiply, but nothing breaks (a test counts the requests)
        logger.warning("could not switch off the pinecone SDK's own retries")


def _batches(items: Sequence[VectorItem]) -> list[Sequence[VectorItem]]:
    """Split items so each request stays under the data plane's count and size limits."""
    per_vector = 24 * max(len(items[0].values), 1) + 512  # JSON floats and metadata, generously
    size = max(1, min(MAX_IDS_PER_REQUEST, MAX_UPSERT_BYTES // per_vector))
    return [items[i : i + size] for i in range(0, len(items), size)]


class PineconeVectorIndex:
    """``VectorIndex`` on a Pinecone index reached by its data-plane host.

    Args:
        api_key: The Pinecone API key.
        host: The index's host, with or without ``https://`` (``http://`` for a local stand-in).
        namespace: The namespace holding this server's vectors (``""`` is the default one).
        timeout: Seconds one HTTP attempt may take; a call takes at most about
            ``tries * timeout`` plus the backoff.
        tries: Attempts per request before ``BackendUnavailable`` (at least 1).
        backoff: Seconds before the first retry; doubles each time, with jitter.
    """

    def __init__(
        self,
        api_key: str,
        host: str,
        namespace: str = "",
        timeout: float = 10,
        *,
        tries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self._index = AsyncIndex(host=host, api_key=api_key, timeout=timeout, source_tag="omi_backend")
        _without_sdk_retries(self._index)
        self._namespace = namespace
        self._timeout = timeout
        self._tries = max(1, tries)
        self._backoff = backoff

    async def upsert(self, items: Sequence[VectorItem]) -> None:
        """Insert or replace each item by id."""
        if not items:
            return
        for batch in _batches(items):
            vectors = [
                {
                    "id": item.id,
                    "values": [float(v) for v in item.values],
                    "metadata": {"uid": item.uid, "memory_id": item.memory_id, "created_at": item.created_at},
                }
                for item in batch
            ]
            await self._call(
                "upsert", partial(self._index.upsert, vectors=vectors, namespace=self._namespace)
            )

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
        if top_k <= 0:
            return []
        clauses: list[dict[str, Any]] = [{"uid": {"$eq": uid}}]
        if start is not None:
            clauses.append({"created_at": {"$gte": int(start)}})
        if end is not None:
            clauses.append({"created_at": {"$lte": int(end)}})
        values = np.asarray(vector, dtype=np.float64).reshape(-1).tolist()
        response = await self._call(
            "query",
            lambda: self._index.query(
                vector=values,
                top_k=min(top_k, MAX_TOP_K),
                namespace=self._namespace,
                filter=clauses[0] if len(clauses) == 1 else {"$and": clauses},
                include_metadata=True,
            ),
        )
        found = []
        for match in response.matches:
            metadata = match.metadata or {}
            memory_id = metadata.get("memory_id")
            if not isinstance(memory_id, str):  # not written by this adapter: derive it from the id
                memory_id = match.id.removeprefix(f"{uid}-")
            found.append(VectorMatch(id=match.id, memory_id=memory_id, score=float(match.score)))
        return found

    async def delete(self, ids: Sequence[str]) -> None:
        """Remove exactly these ids; unknown ids are ignored."""
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), MAX_IDS_PER_REQUEST):
            chunk = unique[i : i + MAX_IDS_PER_REQUEST]
            await self._call("delete", partial(self._index.delete, ids=chunk, namespace=self._namespace))

    async def close(self) -> None:
        """Close the SDK's connection pool; closing twice is harmless."""
        await self._index.close()

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run ``request`` with this adapter's retries; map final failures to ``BackendUnavailable``."""
        delay = self._backoff
        for attempt in range(1, self._tries + 1):
            asked = 0.0  # what a 429's Retry-After asked for
            try:
                # The SDK's timeout bounds each attempt; this guard also stops a reply that trickles.
                async with asyncio.timeout(self._timeout + 1):
                    return await request()
            except ApiError as exc:
                if exc.status_code == 400:
                    raise ValueError(f"pinecone rejected the {what}: {exc.message}") from exc
                if exc.status_code not in _RETRY_STATUSES:
                    raise BackendUnavailable(BACKEND, exc) from exc
                failure: Exception = exc
                if isinstance(exc, RateLimitError) and exc.retry_after is not None:
                    asked = min(exc.retry_after, _MAX_RETRY_AFTER)
            except (PineconeTimeoutError, PineconeConnectionError, TimeoutError) as exc:
                failure = exc
            except PineconeError as exc:
                if isinstance(exc, ValueError | TypeError):  # refused by the SDK before sending
                    raise
                raise BackendUnavailable(BACKEND, exc) from exc  # e.g. a reply that does not parse
            if attempt == self._tries:
                break
            logger.warning("pinecone %s failed (try %d of %d): %s", what, attempt, self._tries, failure)
            jittered = delay * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not a secret)
            await asyncio.sleep(max(jittered, asked))
            delay *= 2
        raise BackendUnavailable(BACKEND, failure) from failure

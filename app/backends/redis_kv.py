"""The production :class:`~app.core.ports.KeyValue`: a Redis server through ``redis.asyncio``.

Redis's own errors are translated to the port's: ``WRONGTYPE`` (a call meant for another
kind of key) becomes ``TypeError``, any other refusal of the command itself (a value that is
not an integer, an overflow) ``ValueError``; a server that cannot be reached, does not
answer, or cannot serve right now (still loading its data after a restart, a read-only
replica after a failover, out of memory, persistence failing, ...) raises
:class:`~app.core.errors.BackendUnavailable`, never a ``redis`` exception.

The client reconnects on its own. A command that meets a dropped connection (every pooled
connection is dead after Redis restarts) is sent again on a new one, a few times within
about half a second (:data:`RETRIES`, jittered backoff), before the outage is reported; a
server that does not answer at all is given :data:`SOCKET_TIMEOUT` seconds. A resent write
may, rarely, have been applied before its connection dropped: ``append`` can then add the
same item twice, and ``add`` answer ``False`` for a key it set itself (callers that cannot
afford either check, as the live-session journal does).

With a ``prefix``, every key this adapter touches is stored as ``prefix + key`` (``keys``
answers without it), so several deployments, or tests, can share one Redis database.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.errors import BackendUnavailable

__all__ = ["CONNECT_TIMEOUT", "RETRIES", "SOCKET_TIMEOUT", "RedisKeyValue", "escape_glob", "redis_client"]

_GLOB_SPECIAL = ("\\", "*", "?", "[", "]")

RETRIES: Final = 4
"""Times a command is sent again after a dropped or refused connection (not after a timeout)."""
CONNECT_TIMEOUT: Final = 2.0
SOCKET_TIMEOUT: Final = 5.0

# Refusals that say the server cannot serve now (a replica after a failover, out of memory,
# no permission, a cluster reconfiguring, persistence failing, a script running), not that the
# command is wrong.
_CANNOT_SERVE = (ReadOnlyError, OutOfMemoryError, NoPermissionError, TryAgainError, ClusterError)
_CANNOT_SERVE_CODES = ("MISCONF", "BUSY", "NOREPLICAS", "READONLY", "OOM", "MASTERDOWN", "CLUSTERDOWN")


def escape_glob(text: str) -> str:
    """``text`` with Redis's glob characters escaped, so a ``MATCH`` pattern takes it literally."""
    for char in _GLOB_SPECIAL:  # the backslash first, so later escapes are not doubled
        text = text.replace(char, "\\" + char)
    return text


def _millis(ttl: float | None) -> int | None:
    if ttl is None:
        return None
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


def _text(value: bytes | str) -> str:
    """A reply as ``str`` (``decode_responses`` already makes it one; this satisfies the types)."""
    return value if isinstance(value, str) else value.decode()


def redis_client(url: str, *, decode_responses: bool = False) -> redis.Redis:
    """A client for ``url`` that resends a command after a dropped connection (see above)."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.02), RETRIES),
        retry_on_error=[RedisConnectionError],
    )


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except ResponseError as exc:
        text = str(exc)
        if text.startswith("WRONGTYPE"):
            raise TypeError(text) from exc
        if isinstance(exc, _CANNOT_SERVE) or text.startswith(_CANNOT_SERVE_CODES):
            raise BackendUnavailable("redis", exc) from exc
        raise ValueError(text) from exc
    except RedisError as exc:  # no connection, a timeout, a refused login, ...
        raise BackendUnavailable("redis", exc) from exc


class RedisKeyValue:
    """Strings, lists and hashes in Redis; one connection pool per instance.

    Args:
        url: A ``redis://`` (or ``rediss://``) URL, optionally with a database number.
        prefix: Put before every key, e.g. ``omi:``; ``keys`` strips it again.
    """

    def __init__(self, url: str, prefix: str = "") -> None:
        self._redis = redis_client(url, decode_responses=True)
        self._prefix = prefix
        self._closed = False

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> str | None:
        """The string at ``key``, or ``None``."""
        async with _translated():
            value = await self._redis.get(self._k(key))
        return None if value is None else _text(value)

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        """Store a string, replacing ``key`` whatever it held; ``ttl`` seconds from now it expires."""
        px = _millis(ttl)
        async with _translated():
            await self._redis.set(self._k(key), value, px=px)

    async def add(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        """Set ``key`` only if it does not exist; ``True`` when it was set."""
        px = _millis(ttl)
        async with _translated():
            return bool(await self._redis.set(self._k(key), value, px=px, nx=True))

    async def ttl(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when it does not exist or never expires."""
        async with _translated():
            millis = int(await self._redis.pttl(self._k(key)))
        return millis / 1000 if millis >= 0 else None

    async def delete(self, *keys: str) -> int:
        """Delete the keys (of any kind); the number that existed."""
        if not keys:
            return 0
        async with _translated():
            return int(await self._redis.delete(*map(self._k, keys)))

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to an integer value (missing counts as 0) and return the result."""
        async with _translated():
            return int(await self._redis.incrby(self._k(key), amount))

    async def append(self, key: str, *values: str) -> int:
        """Append to the list at ``key``; the list's new length."""
        async with _translated():
            if not values:
                return int(await self._redis.llen(self._k(key)))
            return int(await self._redis.rpush(self._k(key), *values))

    async def items(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        """Elements ``start``..``stop`` (inclusive, negative from the end) of the list at ``key``."""
        async with _translated():
            return [_text(item) for item in await self._redis.lrange(self._k(key), start, stop)]

    async def hset(self, key: str, field: str, value: str) -> None:
        """Set one field of the hash at ``key``."""
        async with _translated():
            await self._redis.hset(self._k(key), field, value)

    async def hget(self, key: str, field: str) -> str | None:
        """One field of the hash at ``key``, or ``None``."""
        async with _translated():
            value = await self._redis.hget(self._k(key), field)
        return None if value is None else _text(value)

    async def hgetall(self, key: str) -> dict[str, str]:
        """Every field of the hash at ``key`` (empty when it is missing)."""
        async with _translated():
            found = await self._redis.hgetall(self._k(key))
        return {_text(field): _text(value) for field, value in found.items()}

    async def hdel(self, key: str, *fields: str) -> int:
        """Delete fields of the hash at ``key``; the number that existed."""
        if not fields:
            return 0
        async with _translated():
            return int(await self._redis.hdel(self._k(key), *fields))

    async def keys(self, prefix: str) -> list[str]:
        """Every live key that starts with ``prefix`` (any kind), sorted."""
        pattern = escape_glob(self._k(prefix)) + "*"
        strip = len(self._prefix)
        async with _translated():
            found = {_text(key)[strip:] async for key in self._redis.scan_iter(match=pattern, count=1000)}
        return sorted(found)

    async def ping(self) -> None:
        """Ask the server for a PONG (``doctor``)."""
        async with _translated():
            await self._redis.ping()

    async def close(self) -> None:
        """Close the connection pool; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            await self._redis.aclose()

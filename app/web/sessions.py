"""Server-side web sessions kept in the KeyValue port (SQLite embedded, Redis in production).

:class:`KeyValueStore` is a Litestar :class:`~litestar.stores.base.Store` over our KeyValue
port, so sessions live wherever the rest of the shared state lives. :class:`WebSessionConfig`
is Litestar's :class:`~litestar.middleware.session.server_side.ServerSideSessionConfig` with
a leaner, safer backend:

- the store key is the SHA-256 of the session id: the store never holds a usable cookie;
- a request without a session writes nothing and sets no cookie (no empty sessions for
  every anonymous visitor);
- an unchanged session is neither written again nor sent again;
- an id the store does not know is never adopted, and :func:`rotate_session` (called at
  sign-in) moves the session to a fresh id, so a planted cookie cannot fix a session.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from datetime import timedelta
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.status_codes import HTTP_507_INSUFFICIENT_STORAGE
from litestar.stores.base import Store
from litestar.types import Empty, Message, ScopeSession
from litestar.utils.dataclass import extract_dataclass_items

from app.core.errors import StorageFull
from app.core.ports import KeyValue

__all__ = ["KeyValueStore", "WebSessionBackend", "WebSessionConfig", "rotate_session"]

log = logging.getLogger("omi_backend.web")

_LOADED = "omi_web_session_loaded"
_ROTATE = "omi_web_session_rotate"


class _Entry(msgspec.Struct, kw_only=True):
    """What :class:`KeyValueStore` keeps under a key: the value and when it expires."""

    data: str
    expires_at: float | None = None
    base64: bool = False


def _seconds(value: int | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class KeyValueStore(Store):
    """A Litestar store over the KeyValue port, every key under ``prefix``.

    Values are kept as JSON ``{"data", "expires_at", "base64"}``: text as it is, other
    bytes base64-encoded. Expiry is the KeyValue port's own TTL.
    """

    __slots__ = ("kv", "prefix")

    def __init__(self, kv: KeyValue, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        ttl = _seconds(expires_in)
        await self._put(key, value, ttl)

    async def _put(self, key: str, value: str | bytes, ttl: float | None) -> None:
        raw = value.encode() if isinstance(value, str) else value
        try:
            entry = _Entry(data=raw.decode())
        except UnicodeDecodeError:
            entry = _Entry(data=base64.b64encode(raw).decode(), base64=True)
        if ttl is not None:
            entry.expires_at = time.time() + ttl
        await self.kv.set(self.prefix + key, msgspec.json.encode(entry).decode(), ttl=ttl)

    async def _entry(self, key: str) -> _Entry | None:
        raw = await self.kv.get(self.prefix + key)
        return None if raw is None else msgspec.json.decode(raw, type=_Entry)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        entry = await self._entry(key)
        if entry is None:
            return None
        data = base64.b64decode(entry.data) if entry.base64 else entry.data.encode()
        if renew_for is not None and entry.expires_at is not None:
            await self._put(key, data, _seconds(renew_for))
        return data

    async def delete(self, key: str) -> None:
        await self.kv.delete(self.prefix + key)

    async def delete_all(self) -> None:
        keys = await self.kv.keys(self.prefix)
        if keys:
            await self.kv.delete(*keys)

    async def exists(self, key: str) -> bool:
        return await self.kv.get(self.prefix + key) is not None

    async def expires_in(self, key: str) -> int | None:
        entry = await self._entry(key)
        if entry is None or entry.expires_at is None:
            return None
        return int(entry.expires_at - time.time())


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def rotate_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Give the session a new id when the response goes out (call it at sign-in)."""
    connection.state[_ROTATE] = True


class WebSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend with hashed store keys, no empty sessions and rotation."""

    async def get(self, session_id: str, store: Store) -> bytes | None:
        return await super().get(_hashed(session_id), store)

    async def set(self, session_id: str, data: bytes, store: Store) -> None:
        await super().set(_hashed(session_id), data, store)

    async def delete(self, session_id: str, store: Store) -> None:
        await super().delete(_hashed(session_id), store)

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        session_id = connection.cookies.get(self.config.key)
        if not session_id:
            return {}
        data = await self.get(session_id, store=self.config.get_store_from_app(connection.scope["app"]))
        if data is None:
            return {}
        connection.state[_LOADED] = data
        return self.deserialize_data(data)

    def _cookie(self, value: str, **extra: Any) -> str:
        params = dict(extract_dataclass_items(self.config, exclude_none=True, include=Cookie.__dict__.keys()))
        params.update(extra)
        return Cookie(value=value, key=self.config.key, **params).to_header(header="")

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        try:
            await self._store_in_message(scope_session, message, connection)
        except StorageFull as exc:  # the response is under way: only its status can say so
            log.error("%s: the web session was not saved: %s", connection.url.path, exc)
            message["status"] = HTTP_507_INSUFFICIENT_STORAGE  # type: ignore[typeddict-unknown-key]

    async def _store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        store = self.config.get_store_from_app(connection.scope["app"])
        loaded: bytes | None = connection.state.get(_LOADED)
        cookie_id = connection.cookies.get(self.config.key)
        headers = MutableScopeHeaders.from_message(message)
        if scope_session is Empty or not scope_session:
            if cookie_id:  # signed out, or a cookie that names no session: forget both
                if loaded is not None:
                    await self.delete(cookie_id, store)
                headers.add("Set-Cookie", self._cookie("null", expires=0, max_age=0))
            return
        data = self.serialize_data(scope_session, connection.scope)
        if loaded is not None and cookie_id and not connection.state.get(_ROTATE):
            if data == loaded:
                return
            session_id = cookie_id
        else:
            if loaded is not None and cookie_id:
                await self.delete(cookie_id, store)
            session_id = self.generate_session_id()
        await self.set(session_id, data, store)
        headers.add("Set-Cookie", self._cookie(session_id))


class WebSessionConfig(ServerSideSessionConfig):
    """:class:`ServerSideSessionConfig` that builds a :class:`WebSessionBackend`."""

    _backend_class = WebSessionBackend

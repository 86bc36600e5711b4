"""Who is calling: the ``uid`` dependency every ``/v1``, ``/v2`` and ``/v3`` route takes.

Accepted, in order (contract section 1): admin impersonation ``<ADMIN_KEY><uid>`` when
``ADMIN_KEY`` is set (constant-time comparison), a token issued by ``omi-backend users
create``, and a Firebase ID token when ``FIREBASE_PROJECT_ID`` is set. A ``uid`` query
parameter that disagrees with the caller is a 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Scope

from app.core.tokens import TokenService, valid_uid

__all__ = ["Authenticator", "provide_uid", "require_user"]

_UID = "omi_uid"

FirebaseVerifier = Callable[[str], Awaitable[str | None]]


class Authenticator:
    """Resolves an ``Authorization`` header to a uid."""

    def __init__(
        self, tokens: TokenService, *, admin_key: str | None, firebase: FirebaseVerifier | None = None
    ) -> None:
        self.tokens = tokens
        self.admin_key = admin_key or None
        self.firebase = firebase

    async def authenticate(self, header: str | None) -> str:
        """The uid of a header value, or ``NotAuthorizedException`` (a 401)."""
        if not header or len(header) > 8192:
            raise NotAuthorizedException("missing Authorization header")
        credential = header.strip()
        if credential[:7].lower() == "bearer ":
            credential = credential[7:].strip()
        if not credential:
            raise NotAuthorizedException("empty Authorization header")
        uid = self._impersonated(credential)
        if uid is None:
            uid = await self.tokens.resolve(credential)
        if uid is None and self.firebase is not None:
            uid = await self.firebase(credential)
        if uid is None:
            raise NotAuthorizedException("invalid or revoked token")
        return uid

    def _impersonated(self, credential: str) -> str | None:
        key = self.admin_key
        if key is None or len(credential) <= len(key):
            return None
        candidate = credential[len(key) :]
        if hmac.compare_digest(credential[: len(key)].encode(), key.encode()) and valid_uid(candidate):
            return candidate
        return None


async def require_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: authenticate before anything else about the request is looked at.

    Guards run before Litestar parses parameters and bodies, so a caller without valid
    credentials learns nothing from validation errors. The uid is kept in the scope's state.
    """
    authenticator: Authenticator = connection.app.state.authenticator
    header = connection.headers.get("authorization")
    if header is None and connection.scope["type"] == ScopeType.WEBSOCKET:
        token = connection.query_params.get("token")
        header = f"Bearer {token}" if token else None
    uid = await authenticator.authenticate(header)
    claimed = connection.query_params.get("uid")
    if claimed is not None and claimed != uid:
        raise PermissionDeniedException("the uid parameter does not match the credentials")
    connection.state[_UID] = uid


async def provide_uid(scope: Scope) -> str:
    """Dependency: the uid that :func:`require_user` authenticated."""
    uid = scope.get("state", {}).get(_UID)
    if not isinstance(uid, str):  # a route that forgot the guard must fail closed
        raise NotAuthorizedException("not authenticated")
    return uid

"""Sign-in with a user token (the API's tokens) into a server-side session; sign-out.

The session keeps the uid and the SHA-256 of the token, never the token. Every page checks
that the token is still live, so revoking it (``omi-backend users revoke``) signs its web
sessions out too. Pages are signed-in only unless their handler says ``opt={"public": True}``;
a visitor without a session is sent to ``/login?next=<where they were going>``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import QueryParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Redirect, Template
from litestar.types import Scope

from app.core.tokens import TokenService, token_digest
from app.logsafe import redact
from app.web.rendering import USER_KEY, current_user, page
from app.web.sessions import rotate_session

__all__ = ["LoginPages", "WebAuth", "provide_web_uid", "safe_next", "to_login"]

PUBLIC = "public"
"""The ``opt`` key of handlers open without a session (sign-in, sign-out)."""


class LoginForm(msgspec.Struct):
    token: Annotated[str, msgspec.Meta(max_length=512)] = ""
    next: Annotated[str, msgspec.Meta(max_length=2_000)] = "/"


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else ``/`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return "/"
    return target


class WebAuth:
    """Resolves the session of a request to a uid, through the same tokens as the API."""

    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens

    def __deepcopy__(self, memo: dict[int, Any]) -> WebAuth:
        return self  # a service, shared by the router copies Litestar makes

    async def user(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
        """The uid of the connection's session, if its token is still live."""
        session = connection.scope.get("session")
        if not isinstance(session, dict):
            return None
        uid, digest = session.get("uid"), session.get("token")
        if not isinstance(uid, str) or not isinstance(digest, str):
            return None
        return uid if await self.tokens.resolve_digest(digest) == uid else None

    async def guard(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        """Guard of every page: a session, or ``NotAuthorizedException`` (sent to sign-in)."""
        uid = await self.user(connection)
        if uid is not None:
            connection.state[USER_KEY] = uid
        elif not handler.opt.get(PUBLIC):
            raise NotAuthorizedException("sign in first")

    async def sign_in(self, request: Request[Any, Any, Any], token: str) -> bool:
        """Start a session for the owner of ``token``; ``False`` when the token is not valid."""
        uid = await self.tokens.resolve(token.strip())
        if uid is None:
            return False
        request.set_session({"uid": uid, "token": token_digest(token.strip())})
        rotate_session(request)
        return True


async def provide_web_uid(scope: Scope) -> str:
    """Dependency ``uid`` of the pages: the uid the guard found (fails closed without it)."""
    uid = scope.get("state", {}).get(USER_KEY)
    if not isinstance(uid, str):
        raise NotAuthorizedException("sign in first")
    return uid


def to_login(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    """Where a visitor without a session goes: the sign-in page, then back here."""
    here = request.url.path + (f"?{redact(request.url.query)}" if request.url.query else "")
    if request.headers.get("hx-request") == "true":
        current = request.headers.get("hx-current-url")
        here = urlsplit(current).path if current else "/"
        target = "/login?" + urlencode({"next": safe_next(here)})
        return Response(content=b"", headers={"HX-Redirect": target})
    return Redirect("/login?" + urlencode({"next": safe_next(here)}), status_code=303)


class LoginPages(Controller):
    """``/login`` (the sign-in form) and ``/logout``."""

    opt = {PUBLIC: True}  # noqa: RUF012 (Litestar's layer attribute)

    @get("/login")
    async def login_page(
        self,
        request: HTMXRequest,
        next_url: Annotated[str, QueryParameter(name="next", max_length=2_000)] = "/",
    ) -> Template | Redirect:
        """The sign-in form (already signed in: straight on)."""
        if current_user(request) is not None:
            return Redirect(safe_next(next_url), status_code=303)
        return page(request, "login.html", next=safe_next(next_url), error=None)

    @post("/login", status_code=303)
    async def login(
        self, request: HTMXRequest, data: URLEncodedBody[LoginForm], web_auth: NamedDependency[WebAuth]
    ) -> Template | Redirect:
        """Check the token; on success a fresh session and back to where the visitor was going."""
        if await web_auth.sign_in(request, data.token):
            return Redirect(safe_next(data.next), status_code=303)
        return page(
            request,
            "login.html",
            status_code=400,
            next=safe_next(data.next),
            error="That token is not valid. Tokens come from `omi-backend users create`.",
        )

    @post("/logout", status_code=303)
    async def logout(self, request: HTMXRequest) -> Redirect:
        """End the session (its cookie and its stored data)."""
        request.clear_session()
        return Redirect("/login", status_code=303)

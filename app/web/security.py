"""Security of the web pages: response headers, Secure cookies, the CSRF configuration.

Every response of the web and static routers carries a Content-Security-Policy that allows
only our own scripts and styles (no inline script, no ``eval``: htmx is configured not to
need them) and images from here or over HTTPS (plugin icons), ``frame-ancestors 'none'``,
``nosniff`` and a same-origin referrer policy. Pages are also ``no-store`` (they hold
personal data) and ``Vary: HX-Request`` (one URL serves a page or its fragment). Cookies
set over HTTPS (``scope["scheme"]``, which uvicorn takes from ``X-Forwarded-Proto`` behind a
trusted proxy), or always with ``OMI_WEB_SECURE_COOKIES``, get the ``Secure`` attribute.

CSRF: Litestar's double-submit middleware with an HMAC secret from ``OMI_WEB_SECRET`` or,
when unset, one generated once and kept in the KeyValue port (so every instance sharing a
Redis agrees, and tokens survive restarts).
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import FormMultiDict, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from app.core.ports import KeyValue

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "CSRF_HEADER",
    "CSRFGuard",
    "SecurityHeaders",
    "csrf_config",
    "load_csrf_secret",
]

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: https:",  # plugin icons in the catalogue are on their authors' sites
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
CSRF_HEADER = "x-csrftoken"
CSRF_COOKIE = "omi_csrf"
CSRF_SECRET_KEY = "web:csrf_secret"  # noqa: S105 (the KeyValue key it is kept under)

_SECURITY: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
)
_PAGES: tuple[tuple[str, str], ...] = (("vary", "HX-Request"),)


class SecurityHeaders(ASGIMiddleware):
    """Adds the security headers (and, for pages, ``no-store`` and ``Vary``) to every response.

    Args:
        pages: Also mark responses ``Cache-Control: no-store`` (unless the handler set one)
            and ``Vary: HX-Request``; off for static files, which are cached.
        secure_cookies: Mark every cookie ``Secure`` even over plain HTTP.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, *, pages: bool, secure_cookies: bool) -> None:
        self.headers = _SECURITY + (_PAGES if pages else ())
        self.pages = pages
        self.secure_cookies = secure_cookies

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        secure = self.secure_cookies or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in self.headers:
                    headers.add(name, value)
                if self.pages and "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
                if secure:
                    _secure_cookies(headers)
            await send(message)

        await next_app(scope, receive, send_with_headers)


def _secure_cookies(headers: MutableScopeHeaders) -> None:
    cookies = headers.getall("set-cookie", [])
    if not cookies:
        return
    del headers["set-cookie"]
    for cookie in cookies:
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        headers.add("set-cookie", cookie if "secure" in attributes else f"{cookie}; Secure")


class CSRFGuard(CSRFMiddleware):
    """Litestar's CSRF middleware, closing the files of a refused multipart form (Litestar
    closes them after a handler ran, but not when the middleware refused the request)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except PermissionDeniedException:
            form = ScopeState.from_scope(scope).form
            if form is not Empty:
                await FormMultiDict.from_form_data(form).close()
            raise


class SharedCSRFConfig(CSRFConfig):
    """A CSRF configuration that routers share rather than copy (Litestar deep-copies the
    routers it registers), so the secret set at start-up is the one the middleware reads."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedCSRFConfig:
        return self


def csrf_config(secret: str | None) -> SharedCSRFConfig:
    """The CSRF configuration: an HttpOnly cookie (pages carry the token themselves).

    Without ``secret`` a random placeholder is used until :func:`load_csrf_secret` replaces
    it at start-up, before the first request.
    """
    return SharedCSRFConfig(
        secret=secret or secrets.token_hex(32),
        cookie_name=CSRF_COOKIE,
        header_name=CSRF_HEADER,
        cookie_httponly=True,
        cookie_samesite="lax",
    )


async def load_csrf_secret(kv: KeyValue) -> str:
    """The CSRF secret kept in the KeyValue port, created by the first instance to ask."""
    candidate = secrets.token_hex(32)
    await kv.add(CSRF_SECRET_KEY, msgspec.json.encode(candidate).decode())
    stored = await kv.get(CSRF_SECRET_KEY)
    return candidate if stored is None else msgspec.json.decode(stored, type=str)

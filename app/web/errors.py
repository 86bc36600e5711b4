"""Errors on the web pages: an HTML page (or, for htmx, a short text) instead of JSON."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.response import Template
from litestar.types import ExceptionHandlersMap

from app.core.errors import BackendUnavailable, StorageFull
from app.logsafe import redact
from app.web.auth import to_login
from app.web.rendering import current_user

__all__ = ["exception_handlers"]

log = logging.getLogger("omi_backend.web")

_TITLES = {
    400: "That request did not make sense",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "Too large",
    503: "Temporarily unavailable",
    507: "The server's disk is full",
}


def _error(request: Request[Any, Any, Any], status: int, detail: str) -> Response[Any]:
    title = _TITLES.get(status, "Something went wrong")
    if request.headers.get("hx-request") == "true":
        return Response(f"{title}: {detail}", status_code=status, media_type=MediaType.TEXT)
    return Template(
        template_name="error.html",
        status_code=status,
        context={
            "title": title,
            "detail": detail,
            "status": status,
            "user": current_user(request),
            "section": None,
        },
    )


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A 4xx (or a deliberate 5xx) with its message (a credential in it redacted: Litestar's
    validation errors name the URL with its query string)."""
    if exc.status_code >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
        return _error(request, exc.status_code, "Please try again in a moment.")
    return _error(request, exc.status_code, redact(exc.detail))


def unavailable(request: Request[Any, Any, Any], exc: BackendUnavailable) -> Response[Any]:
    """A vendor that stayed down: 503, try again later."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    response = _error(request, 503, f"{exc.backend} is unavailable, please try again in a moment.")
    response.headers["Retry-After"] = "5"
    return response


def storage_full(request: Request[Any, Any, Any], exc: StorageFull) -> Response[Any]:
    """The data directory's disk is full: 507, nothing was saved."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    response = _error(request, 507, "Nothing was saved. Please try again once the server has room.")
    response.headers["Retry-After"] = "60"
    return response


def unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything else: logged with its traceback, shown without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(request, 500, "The error was logged. Please try again.")


exception_handlers: ExceptionHandlersMap = {
    NotAuthorizedException: to_login,
    HTTPException: http_error,
    ValidationException: http_error,  # the app's JSON handler of this class is for the API
    BackendUnavailable: unavailable,
    StorageFull: storage_full,
    Exception: unexpected,
}
"""The web router's exception handlers (the API keeps its JSON ones)."""

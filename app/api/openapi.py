"""What the published OpenAPI schema (``/schema/openapi.json``) says beyond the handlers' types.

The credentials each route takes (its ``security``) and the error answers it can give (its
``raises``): every error is JSON ``{"status_code": int, "detail": str}``, the shape Litestar
documents for the exceptions listed here. ``tests/hardening/test_schema_fuzz.py`` holds every
REST route to what this schema says.
"""

from __future__ import annotations

from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE, HTTP_507_INSUFFICIENT_STORAGE

__all__ = [
    "BODY_ERRORS",
    "COMPONENTS",
    "INTEGRATION_SECURITY",
    "NOT_FOUND",
    "USER_ERRORS",
    "USER_SECURITY",
    "WRITE_ERRORS",
    "BodyTooLarge",
    "DiskFull",
    "errors",
]


class BodyTooLarge(ClientException):
    """A request body over ``OMI_MAX_BODY_BYTES`` (Litestar refuses it before the handler runs)."""

    status_code = HTTP_413_REQUEST_ENTITY_TOO_LARGE


class DiskFull(HTTPException):
    """The data directory's disk is full (:class:`app.core.errors.StorageFull`): nothing was saved."""

    status_code = HTTP_507_INSUFFICIENT_STORAGE
    detail = "The server's disk is full: nothing was saved, try again later"


_BEARER = "BearerToken"
_KEY = "IntegrationKey"
_KEY_UNDERSCORE = "IntegrationKeyUnderscore"

COMPONENTS = Components(
    security_schemes={
        _BEARER: SecurityScheme(
            type="http",
            scheme="bearer",
            description="A token from `omi-backend users create`, `<ADMIN_KEY><uid>` or a Firebase ID token.",
        ),
        _KEY: SecurityScheme(
            type="apiKey",
            name="api-key",
            security_scheme_in="header",
            description="An integration key from `omi-backend keys create` (workflow callers use `api-key`).",
        ),
        _KEY_UNDERSCORE: SecurityScheme(
            type="apiKey",
            name="api_key",
            security_scheme_in="header",
            description="The same integration key under the header name screenpipe sends.",
        ),
    }
)

USER_SECURITY: list[SecurityRequirement] = [{_BEARER: []}]
"""The ``/v1``, ``/v2`` and ``/v3`` routes of the Omi app."""
INTEGRATION_SECURITY: list[SecurityRequirement] = [{_KEY: []}, {_KEY_UNDERSCORE: []}]
"""The inbound integrations (either header name)."""

USER_ERRORS: list[type[HTTPException]] = [
    NotAuthorizedException,  # 401: no, unknown or revoked credentials
    PermissionDeniedException,  # 403: a ``uid`` query parameter that is not the caller
    ServiceUnavailableException,  # 503: a backend stayed down (answered with Retry-After)
]
"""What any route behind credentials (:func:`app.api.auth.require_user`, or an integration
key) can answer besides its own errors."""
BODY_ERRORS: list[type[HTTPException]] = [BodyTooLarge]
"""What a route that reads a request body can answer besides validation errors."""
WRITE_ERRORS: list[type[HTTPException]] = [DiskFull]
"""What a route that stores something can answer."""
NOT_FOUND: type[HTTPException] = NotFoundException
"""An unknown (or another user's) memory or plugin."""


def errors(*, body: bool = False, writes: bool = False, lookup: bool = False) -> list[type[HTTPException]]:
    """The ``raises`` of a route behind credentials: :data:`USER_ERRORS`, plus :data:`BODY_ERRORS`
    when it reads a body, :data:`WRITE_ERRORS` when it stores something and a 404 when it
    looks up a memory or a plugin by id. (Litestar adds the 400 of any route with parameters.)
    """
    found: list[type[HTTPException]] = [NOT_FOUND] if lookup else []
    return [*USER_ERRORS, *found, *(BODY_ERRORS if body else []), *(WRITE_ERRORS if writes else [])]

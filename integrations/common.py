"""What the inbound integrations share: per-user keys, the key guard, text to transcript.

Keys: ``omi-backend keys create <uid>`` issues a key (``omi_ik_...``), stored hashed through
:class:`~app.core.tokens.TokenService` with ``kind="integration_key"``. The key decides the
uid; a ``uid`` query parameter that disagrees is a 403. ``OMI_INTEGRATIONS_API_KEY``, when
set, is also accepted, and then the uid comes from the ``uid`` parameter (the original Omi
behaviour, for one-user servers). An unset global key never lets a request through.

Text: a caller sends plain text, but a memory is a transcript. ``audio_transcript`` text is
split into sentences, each a ``SPEAKER_0`` segment, with times spread over the
conversation's duration in proportion to their length (the text has no timing, so this is
an estimate that keeps segments in order and inside the conversation); ``other_text`` (and
screen text) is one ``SPEAKER_0`` segment spanning the whole duration, since it was never
spoken.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler

from app.core.models import TranscriptSegment
from app.core.ports import KeyValue
from app.core.text import split_sentences
from app.core.tokens import TokenService, valid_uid
from app.plugins import PluginContext, hookimpl

__all__ = [
    "KEY_HEADERS",
    "KEY_KIND",
    "KEY_PREFIX",
    "KeyedIntegration",
    "integration_keys",
    "text_segments",
]

KEY_KIND = "integration_key"
KEY_PREFIX = "omi_ik_"
KEY_HEADERS = ("api-key", "api_key")
"""Where a caller puts its key: workflow callers send ``api-key``, screenpipe ``api_key``."""

_UID_STATE = "integration_uid"
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]
_MAX_SECONDS = 7 * 24 * 3600.0  # the longest span a transcript segment may have


def integration_keys(kv: KeyValue) -> TokenService:
    """The store of per-user integration keys (hashed, several per user, revocable)."""
    return TokenService(kv, kind=KEY_KIND, prefix=KEY_PREFIX)


def text_segments(text: str, text_source: str, duration: float) -> list[TranscriptSegment]:
    """Transcript segments for plain ``text`` lasting ``duration`` seconds (see the module doc)."""
    duration = min(max(duration, 0.0), _MAX_SECONDS)
    text = text.strip()
    pieces = split_sentences(text) if text_source == "audio_transcript" else [text]
    pieces = [p for p in pieces if p] or [text]
    total = sum(len(p) for p in pieces) or 1
    segments: list[TranscriptSegment] = []
    elapsed = 0
    for piece in pieces:
        start = duration * elapsed / total
        elapsed += len(piece)
        end = duration * elapsed / total
        segments.append(TranscriptSegment(text=piece, speaker="SPEAKER_0", start=start, end=max(end, start)))
    return segments


class KeyedIntegration:
    """Base of an integration plugin: keeps the context and guards routes with integration keys."""

    def __init__(self) -> None:
        self._context: PluginContext | None = None

    @hookimpl
    def on_startup(self, context: PluginContext) -> None:
        self._context = context

    def require_context(self) -> PluginContext:
        """The plugin context; a 503 before the server has started the plugin."""
        if self._context is None:
            raise ServiceUnavailableException("the integration is not started")
        return self._context

    def guard(self) -> Guard:
        """A Litestar guard: the request's key decides its uid (401 without a valid key, 403 on a
        mismatch). Guards run before the body is parsed, so a caller without a key learns nothing.

        It is a plain function closing over the plugin: Litestar deep-copies route handlers and
        their guards, and a copied bound method would be a copy of the plugin, never started.
        """
        integration = self

        async def integration_key_guard(
            connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
        ) -> None:
            await integration.authenticate(connection)

        return integration_key_guard

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        """Establish the request's uid from its key (see :meth:`guard`)."""
        context = self.require_context()
        key = next((v for h in KEY_HEADERS if (v := connection.headers.get(h))), None)
        if not key:
            raise NotAuthorizedException("missing API key (header api-key or api_key)")
        claimed = connection.query_params.get("uid")
        uid = await integration_keys(context.kv).resolve(key)
        if uid is not None:
            if claimed is not None and claimed != uid:
                raise PermissionDeniedException("the uid parameter does not match the API key")
        elif self._global_key_matches(key):
            if claimed is None or not valid_uid(claimed):
                raise ValidationException("the global API key needs a valid uid query parameter")
            uid = claimed
        else:
            raise NotAuthorizedException("invalid or revoked API key")
        connection.state[_UID_STATE] = uid

    def _global_key_matches(self, key: str) -> bool:
        expected = self.require_context().settings.integrations_api_key
        if not expected:
            return False
        return hmac.compare_digest(key.encode(), expected.encode())

    @staticmethod
    def caller(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        """The uid :meth:`guard` established for this request."""
        uid = connection.state.get(_UID_STATE)
        if not isinstance(uid, str):  # a route without the guard fails closed
            raise NotAuthorizedException("not authenticated")
        return uid

"""``/settings``: the speech profile and the integration keys.

The speech profile form takes the same file as ``POST /v3/upload-audio`` (a 16 kHz mono
16-bit WAV of 5 to 120 seconds), checked and stored by the same functions
(:func:`~app.core.speech_profile.validate_profile_wav`,
:func:`~app.core.speech_profile.save_profile`); a file that does not fit comes back with the
reason. Integration keys (``omi_ik_...``, what workflow and screenpipe callers send) are
created here and shown once, in the answer to the form that created them; afterwards a key
is listed only by its creation time and a fingerprint of its hash, and can be revoked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import MultipartBody, PathParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from app.core.ports import KeyValue
from app.core.services import Services
from app.core.speech_profile import (
    MAX_PROFILE_S,
    MIN_PROFILE_S,
    ProfileError,
    duration_key,
    save_profile,
    validate_profile_wav,
)
from app.core.tokens import TokenService
from app.web.rendering import done, invalid, page

__all__ = ["FINGERPRINT_CHARS", "IntegrationKey", "ProfileForm", "SettingsPage", "SpeechProfile"]

FINGERPRINT_CHARS = 12
"""Hex characters of a key's SHA-256 shown (and used to revoke it): never the key itself."""
_FULL = "settings/index.html"
_PROFILE = "settings/_profile.html"
_KEYS = "settings/_keys.html"

Fingerprint = Annotated[
    str, PathParameter(min_length=FINGERPRINT_CHARS, max_length=FINGERPRINT_CHARS, pattern=r"^[0-9a-f]+$")
]


@dataclass
class ProfileForm:
    """The speech profile form (multipart)."""

    file: UploadFile


class SpeechProfile(msgspec.Struct, frozen=True):
    """Whether the user has a speech profile, and how long it is."""

    seconds: float | None = None

    @property
    def has_profile(self) -> bool:
        return self.seconds is not None


class IntegrationKey(msgspec.Struct, frozen=True):
    """An integration key as listed: when it was made and the start of its hash."""

    fingerprint: str
    created_at: datetime


def integration_keys(kv: KeyValue) -> TokenService:
    """The integrations' key store (imported late: the integrations import the plugin API,
    which imports the web pages' rendering)."""
    from integrations.common import integration_keys as keys

    return keys(kv)


async def _profile(kv: KeyValue, uid: str) -> SpeechProfile:
    raw = await kv.get(duration_key(uid))
    if raw is None:
        return SpeechProfile()
    try:
        return SpeechProfile(seconds=float(raw))
    except ValueError:
        return SpeechProfile(seconds=0.0)


async def _keys(kv: KeyValue, uid: str) -> list[IntegrationKey]:
    """The user's integration keys, newest first."""
    keys = [
        IntegrationKey(fingerprint=digest[:FINGERPRINT_CHARS], created_at=datetime.fromisoformat(created))
        for digest, created in (await integration_keys(kv).digests(uid)).items()
    ]
    return sorted(keys, key=lambda key: key.created_at, reverse=True)


async def _context(kv: KeyValue, uid: str, **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "section": "settings",
        "profile": await _profile(kv, uid),
        "keys": await _keys(kv, uid),
        "profile_error": None,
        "profile_saved": False,
        "new_key": None,
        "min_seconds": MIN_PROFILE_S,
        "max_seconds": MAX_PROFILE_S,
    }
    context.update(extra)
    return context


class SettingsPage(Controller):
    """``/settings`` and its forms."""

    path = "/settings"

    @get("", name="settings")
    async def settings(
        self, request: HTMXRequest, uid: NamedDependency[str], services: NamedDependency[Services]
    ) -> Template:
        """The settings page."""
        return page(request, _FULL, **await _context(services.kv, uid))

    @post("/speech-profile", status_code=200)
    async def upload_profile(
        self,
        request: HTMXRequest,
        data: MultipartBody[ProfileForm],
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Template | Response[Any]:
        """Store the user's speech profile, as ``POST /v3/upload-audio`` does."""
        content = await data.file.read()
        try:
            pcm, seconds = await asyncio.to_thread(validate_profile_wav, content)
        except ProfileError as exc:
            context = await _context(services.kv, uid, profile_error=f"Not saved: {exc}.")
            return invalid(request, _FULL, _PROFILE, **context)
        await save_profile(services.blobs, services.kv, uid, pcm, seconds)
        context = await _context(services.kv, uid, profile_saved=True)
        return done(request, "/settings#speech-profile", _PROFILE, **context)

    @post("/keys", status_code=201)
    async def create_key(
        self, request: HTMXRequest, uid: NamedDependency[str], services: NamedDependency[Services]
    ) -> Template:
        """A new integration key, shown in this answer only (a plain post gets the whole page)."""
        key = await integration_keys(services.kv).create(uid)
        context = await _context(services.kv, uid, new_key=key)
        return page(request, _FULL, _KEYS, status_code=201, **context)

    @post("/keys/{fingerprint:str}/revoke", status_code=200)
    async def revoke_key(
        self,
        request: HTMXRequest,
        fingerprint: Fingerprint,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
    ) -> Template | Response[Any]:
        """Revoke the user's key with this fingerprint; 404 when the user has none."""
        keys = integration_keys(services.kv)
        matching = [d for d in await keys.digests(uid) if d.startswith(fingerprint)]
        if len(matching) != 1 or not await keys.revoke_digest(uid, matching[0]):
            raise NotFoundException("There is no such key.")
        context = await _context(services.kv, uid)
        return done(request, "/settings#keys", _KEYS, **context)

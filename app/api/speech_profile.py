"""Speech-profile routes (contract section 3): upload a profile, ask whether there is one.

``POST /v3/upload-audio`` takes a multipart ``file``: a 16 kHz mono 16-bit WAV of 5 to 120
seconds. ``POST /v3/upload-bytes`` takes the raw Opus packets the app recorded
(``{"bytes": [[int]], "duration": 10..120}``), decodes them and stores the same WAV. Anything
else is a 400 that says what is wrong. ``GET /v3/speech-profile`` says whether the caller has
a profile. See :mod:`app.core.speech_profile` for where profiles are kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import JSONBody, MultipartBody

from app.api.auth import require_user
from app.api.openapi import USER_SECURITY, errors
from app.core.services import Services
from app.core.speech_profile import (
    ProfileError,
    decode_opus_packets,
    has_profile,
    save_profile,
    validate_profile_wav,
)

__all__ = ["ProfileBytes", "ProfileUpload", "SpeechProfileController"]

MAX_PACKETS = 12_000  # 120 s of 10 ms packets
MAX_PACKET_BYTES = 4_000


@dataclass
class ProfileUpload:
    """The multipart body of ``/v3/upload-audio``."""

    file: UploadFile


class ProfileBytes(msgspec.Struct, kw_only=True):
    """The body of ``/v3/upload-bytes``: one list of byte values per Opus packet."""

    packets: Annotated[
        list[Annotated[list[int], msgspec.Meta(max_length=MAX_PACKET_BYTES)]],
        msgspec.Meta(min_length=1, max_length=MAX_PACKETS),
    ] = msgspec.field(name="bytes")
    duration: Annotated[int, msgspec.Meta(ge=10, le=120)]


class SpeechProfileController(Controller):
    path = "/v3"
    guards = (require_user,)
    security = USER_SECURITY
    tags = ("speech profile",)

    @post("/upload-audio", status_code=200, raises=errors(body=True, writes=True))
    async def upload_audio(
        self,
        uid: NamedDependency[str],
        services: NamedDependency[Services],
        data: MultipartBody[ProfileUpload],
    ) -> dict[str, str]:
        """Store the caller's speech profile from a 16 kHz mono WAV of 5 to 120 seconds."""
        content = await data.file.read()
        try:
            pcm, seconds = await asyncio.to_thread(validate_profile_wav, content)
        except ProfileError as exc:
            raise ClientException(str(exc)) from exc
        url = await save_profile(services.blobs, services.kv, uid, pcm, seconds)
        return {"url": url}

    @post("/upload-bytes", status_code=200, raises=errors(body=True, writes=True))
    async def upload_bytes(
        self, uid: NamedDependency[str], services: NamedDependency[Services], data: JSONBody[ProfileBytes]
    ) -> dict[str, str]:
        """Store the caller's speech profile from the Opus packets the app recorded."""
        try:
            pcm, seconds = await asyncio.to_thread(decode_opus_packets, data.packets)
        except ProfileError as exc:
            raise ClientException(str(exc)) from exc
        await save_profile(services.blobs, services.kv, uid, pcm, seconds)
        return {"status": "ok"}

    @get("/speech-profile", raises=errors())
    async def speech_profile(
        self, uid: NamedDependency[str], services: NamedDependency[Services]
    ) -> dict[str, bool]:
        """Whether the caller has a speech profile."""
        return {"has_profile": await has_profile(services.kv, uid)}

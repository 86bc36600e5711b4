"""Firebase ID tokens, verified with google-auth against the project's public keys."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["FirebaseVerifier"]

log = logging.getLogger("omi_backend.auth")


class FirebaseVerifier:
    """Callable: a Firebase ID token -> its ``uid`` (the ``sub`` claim), or ``None``.

    google-auth fetches and caches Google's signing certificates over HTTP; that blocking
    call runs in a worker thread.
    """

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        self._request: Any = None

    def _verify(self, token: str) -> str | None:
        from google.auth.transport import requests as google_requests
        from google.oauth2 import id_token

        if self._request is None:
            self._request = google_requests.Request()
        try:
            claims = id_token.verify_firebase_token(  # type: ignore[no-untyped-call]
                token, self._request, audience=self.project_id
            )
        except Exception as exc:  # any failure to verify means "not this kind of token"
            log.debug("firebase token refused: %s", exc)
            return None
        uid = claims.get("sub") if claims else None
        return uid if isinstance(uid, str) and uid else None

    async def __call__(self, token: str) -> str | None:
        if token.count(".") != 2:
            return None
        return await asyncio.to_thread(self._verify, token)

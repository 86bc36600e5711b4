"""Bearer tokens issued by the server: stored hashed in the KeyValue port, several per user.

A token is shown once, at creation. The KeyValue holds ``auth:tokens:{sha256}`` -> owner
record and ``users:{uid}:tokens`` (a hash of sha256 -> creation time) so a user's tokens
can be listed and revoked.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import msgspec

from app.core.models import utcnow
from app.core.ports import KeyValue

__all__ = ["TokenRecord", "TokenService", "token_digest", "valid_uid"]

_UID_RE = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")


def valid_uid(uid: str) -> bool:
    """User ids are 1..128 characters of letters, digits and ``_ . @ : -``."""
    return bool(_UID_RE.match(uid))


class TokenRecord(msgspec.Struct, frozen=True):
    uid: str
    created_at: str
    kind: str = "user"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_digest(secret: str) -> str:
    """The hash a secret is stored under: what a web session keeps instead of the secret."""
    return _digest(secret)


class TokenService:
    """Issue, resolve and revoke secrets of one kind (user tokens or integration keys)."""

    def __init__(self, kv: KeyValue, *, kind: str = "user", prefix: str = "omi_") -> None:
        self.kv = kv
        self.kind = kind
        self.prefix = prefix

    def _secret_key(self, digest: str) -> str:
        return f"auth:{self.kind}s:{digest}"

    def _owner_key(self, uid: str) -> str:
        return f"users:{uid}:{self.kind}s"

    async def create(self, uid: str) -> str:
        """A new secret for ``uid``; only its hash is kept."""
        if not valid_uid(uid):
            raise ValueError("uid must be 1-128 characters of letters, digits and _ . @ : -")
        secret = self.prefix + secrets.token_urlsafe(32)
        digest = _digest(secret)
        record = TokenRecord(uid=uid, created_at=utcnow().isoformat(), kind=self.kind)
        await self.kv.set(self._secret_key(digest), msgspec.json.encode(record).decode())
        await self.kv.hset(self._owner_key(uid), digest, record.created_at)
        return secret

    async def resolve(self, secret: str) -> str | None:
        """The uid a secret belongs to, or ``None``."""
        if not secret.startswith(self.prefix) or len(secret) > 256:
            return None
        raw = await self.kv.get(self._secret_key(_digest(secret)))
        if raw is None:
            return None
        return msgspec.json.decode(raw, type=TokenRecord).uid

    async def resolve_digest(self, digest: str) -> str | None:
        """The uid of the live secret whose :func:`token_digest` is ``digest``, or ``None``."""
        if len(digest) != 64:
            return None
        raw = await self.kv.get(self._secret_key(digest))
        if raw is None:
            return None
        return msgspec.json.decode(raw, type=TokenRecord).uid

    async def count(self, uid: str) -> int:
        """How many live secrets ``uid`` holds."""
        return len(await self.kv.hgetall(self._owner_key(uid)))

    async def digests(self, uid: str) -> dict[str, str]:
        """The hashes (:func:`token_digest`) of ``uid``'s live secrets, each with its creation time."""
        return await self.kv.hgetall(self._owner_key(uid))

    async def revoke_digest(self, uid: str, digest: str) -> bool:
        """Revoke the secret of ``uid`` whose hash is ``digest``; whether ``uid`` held it."""
        if await self.kv.hget(self._owner_key(uid), digest) is None:
            return False
        await self.kv.delete(self._secret_key(digest))
        await self.kv.hdel(self._owner_key(uid), digest)
        return True

    async def revoke(self, uid: str, secret: str | None = None) -> int:
        """Revoke one secret of ``uid`` (or all of them when ``secret`` is None); the number revoked."""
        owned = await self.kv.hgetall(self._owner_key(uid))
        digests = list(owned) if secret is None else [d for d in [_digest(secret)] if d in owned]
        if not digests:
            return 0
        await self.kv.delete(*(self._secret_key(d) for d in digests))
        await self.kv.hdel(self._owner_key(uid), *digests)
        return len(digests)

"""The plugin catalogue: its entries, who enabled what, the reviews and the ratings.

Entries come from two places: the installed plugins that declare one through
``plugin_info`` (except the ones that are always on: they are part of the server, not a
choice), and Omi-format plugin JSON (the shape of Omi's ``community-plugins.json``) named by
``OMI_PLUGINS_CATALOGUE``, a file path or an http(s) URL, read once and kept until
:meth:`Catalogue.refresh`. An installed plugin wins over an Omi entry with the same id.

Per-user state lives in the KeyValue port under the original Omi backend's key names, as
JSON strings:

- ``users:{uid}:enabled_plugins``: a JSON list of the plugin ids the user enabled;
- ``plugins:{id}:reviews``: a JSON object ``uid -> PluginReview``.

Each is read, changed and written under a lock key (``<key>:lock``, taken with ``add`` and a
TTL), so two changes at once (a user enabling two plugins, two users reviewing one plugin)
never lose one another, across processes too.

Listings are sorted by a Bayesian weighted rating: each plugin's reviews are pooled with
:data:`PRIOR_COUNT` imaginary reviews of :data:`PRIOR_SCORE` stars, so a plugin with one
5-star review does not outrank one with forty 4.8-star reviews. Ties keep catalogue order
(installed plugins first, then the Omi JSON's order).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import msgspec

from app.core.models import utcnow
from app.core.ports import KeyValue
from app.plugins.models import CAPABILITIES, ExternalIntegration, Plugin, PluginReview
from app.plugins.types import PluginInfo

__all__ = [
    "PRIOR_COUNT",
    "PRIOR_SCORE",
    "Catalogue",
    "CatalogueBusy",
    "enabled_plugins_key",
    "parse_omi_catalogue",
    "reviews_key",
    "weighted_rating",
]

log = logging.getLogger("omi_backend.plugins.catalogue")

PRIOR_SCORE = 3.0
"""The prior of the weighted rating: the middle of the 1..5 scale (as the Omi backend used)."""
PRIOR_COUNT = 5
"""How many imaginary :data:`PRIOR_SCORE` reviews each plugin's rating is pooled with."""
MAX_LISTED_REVIEWS = 50
"""Reviews per plugin in a listing, newest first (``rating_count`` counts them all)."""
MAX_SOURCE_BYTES = 10 * 1024 * 1024
"""The largest Omi JSON catalogue read."""
ANONYMOUS = "anonymous"
"""The ``uid`` listings show for reviews by other users."""

_LOCK_TTL = 10.0
_LOCK_WAIT = 12.0
T = TypeVar("T")


class CatalogueBusy(RuntimeError):
    """A per-user or per-plugin lock stayed taken longer than a lock can live."""


def enabled_plugins_key(uid: str) -> str:
    """The KeyValue key of the plugins ``uid`` enabled (a JSON list of ids)."""
    return f"users:{uid}:enabled_plugins"


def reviews_key(plugin_id: str) -> str:
    """The KeyValue key of a plugin's reviews (a JSON object uid -> review)."""
    return f"plugins:{plugin_id}:reviews"


def weighted_rating(rating_avg: float | None, rating_count: int) -> float:
    """The Bayesian weighted rating ``(v*R + m*C) / (v + m)``, ``C``/``m`` the prior."""
    total = (rating_avg or 0.0) * rating_count + PRIOR_SCORE * PRIOR_COUNT
    return total / (rating_count + PRIOR_COUNT)


class _OmiEntry(msgspec.Struct, kw_only=True):
    """One entry of Omi-format plugin JSON, as read (unknown fields are ignored)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\s:]+$")]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    author: str = ""
    description: str = ""
    image: str = ""
    capabilities: list[str] = msgspec.field(default_factory=list)
    memory_prompt: str | None = None
    chat_prompt: str | None = None
    external_integration: ExternalIntegration | None = None
    deleted: bool = False


def parse_omi_catalogue(data: bytes) -> list[Plugin]:
    """The entries of Omi-format plugin JSON; a bad entry is logged and skipped.

    Raises:
        ValueError: ``data`` is not JSON, or not a JSON list.
    """
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError(f"expected a JSON list of plugins, got {type(raw).__name__}")
    entries: dict[str, Plugin] = {}
    for index, item in enumerate(raw):
        try:
            entry = msgspec.convert(item, _OmiEntry)
        except msgspec.ValidationError as exc:
            log.error("plugin catalogue entry %d skipped: %s", index, exc)
            continue
        if entry.id in entries:
            log.error("plugin catalogue entry %d skipped: the id %r is used twice", index, entry.id)
            continue
        unknown = [c for c in entry.capabilities if c not in CAPABILITIES]
        if unknown:
            log.info("plugin %s: capabilities %s are not known here and are left out", entry.id, unknown)
        entries[entry.id] = Plugin(
            id=entry.id,
            name=entry.name,
            author=entry.author,
            description=entry.description,
            image=entry.image,
            capabilities=[c for c in entry.capabilities if c in CAPABILITIES],  # type: ignore[misc]
            memory_prompt=entry.memory_prompt,
            chat_prompt=entry.chat_prompt,
            external_integration=entry.external_integration,
            deleted=entry.deleted,
        )
    return list(entries.values())


def _from_info(info: PluginInfo) -> Plugin:
    return Plugin(
        id=info.id,
        name=info.name,
        author=info.author,
        description=info.description,
        image=info.image,
        capabilities=list(info.capabilities),
    )


class Catalogue:
    """The plugin catalogue of one app.

    Args:
        kv: Where per-user state and reviews are kept.
        installed: The installed plugins' catalogue entries (``PluginHost.plugin_infos``).
        source: Omi-format plugin JSON: a file path or an http(s) URL; ``None`` for none.
        timeout: Seconds to fetch ``source`` when it is a URL.
        clock: The time reviews are dated with.
    """

    def __init__(
        self,
        kv: KeyValue,
        *,
        installed: Callable[[], Sequence[PluginInfo]],
        source: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.kv = kv
        self.source = source or None
        self.error: str | None = None
        """Why the last read of ``source`` failed, or ``None``."""
        self._installed = installed
        self._timeout = timeout
        self._clock = clock
        self._omi: list[Plugin] = []
        self._loaded = False
        self._refreshing = asyncio.Lock()

    # -- entries -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the Omi JSON the first time only (what the app does at start-up)."""
        if not self._loaded:
            await self.refresh()

    async def refresh(self) -> bool:
        """Read the Omi JSON again; ``False`` (logged, previous entries kept) when it fails."""
        async with self._refreshing:
            self._loaded = True
            if self.source is None:
                self._omi, self.error = [], None
                return True
            try:
                data = await self._read(self.source)
                entries = parse_omi_catalogue(data)
            except (OSError, ValueError, httpx.HTTPError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("cannot read the plugin catalogue %s: %s", self.source, self.error)
                return False
            installed = {info.id for info in self._installed()}
            for entry in entries:
                if entry.id in installed:
                    log.warning("plugin catalogue entry %s is hidden by the installed plugin", entry.id)
            self._omi, self.error = entries, None
            log.info("plugin catalogue %s: %d entries", self.source, len(entries))
            return True

    def entries(self) -> list[Plugin]:
        """Every entry, deleted ones included: installed plugins first, then the Omi JSON's."""
        installed = [_from_info(info) for info in self._installed() if not info.always_on]
        taken = {entry.id for entry in installed}
        return installed + [entry for entry in self._omi if entry.id not in taken]

    def entry(self, plugin_id: str) -> Plugin | None:
        """The entry with id ``plugin_id`` (possibly ``deleted``), or ``None``."""
        for info in self._installed():
            if info.id == plugin_id:
                return None if info.always_on else _from_info(info)
        return next((entry for entry in self._omi if entry.id == plugin_id), None)

    def omi_entries(self) -> list[Plugin]:
        """The entries of the Omi JSON that are not deleted (nor hidden by an installed plugin)."""
        taken = {info.id for info in self._installed()}
        return [entry for entry in self._omi if not entry.deleted and entry.id not in taken]

    # -- per-user state ----------------------------------------------------------------------

    async def is_enabled(self, plugin_id: str, uid: str) -> bool:
        """Whether ``uid`` enabled ``plugin_id`` and it is still in the catalogue, not deleted."""
        entry = self.entry(plugin_id)
        if entry is None or entry.deleted:
            return False
        return plugin_id in await self.enabled_ids(uid)

    async def enabled_ids(self, uid: str) -> list[str]:
        """The ids ``uid`` enabled, in the order they were enabled (unknown ids included)."""
        return _decode(await self.kv.get(enabled_plugins_key(uid)), list[str], [])

    async def enable(self, plugin_id: str, uid: str) -> None:
        """Mark ``plugin_id`` enabled for ``uid`` (checks are the caller's business).

        Raises:
            CatalogueBusy: The user's state stayed locked.
        """
        key = enabled_plugins_key(uid)
        await self._update(key, list[str], [], lambda ids: ids if plugin_id in ids else [*ids, plugin_id])

    async def disable(self, plugin_id: str, uid: str) -> bool:
        """Mark ``plugin_id`` not enabled for ``uid``; whether it was.

        Raises:
            CatalogueBusy: The user's state stayed locked.
        """
        before = await self._update(
            enabled_plugins_key(uid), list[str], [], lambda ids: [i for i in ids if i != plugin_id]
        )
        return plugin_id in before

    async def review(self, plugin_id: str, uid: str, score: float, text: str) -> PluginReview:
        """Store ``uid``'s review of ``plugin_id``, replacing an earlier one.

        Raises:
            ValueError: ``score`` is not within 1..5.
            CatalogueBusy: The plugin's reviews stayed locked.
        """
        try:
            review = msgspec.convert(
                {"uid": uid, "rated_at": self._clock(), "score": score, "review": text}, PluginReview
            )
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        await self._update(
            reviews_key(plugin_id), dict[str, PluginReview], {}, lambda reviews: {**reviews, uid: review}
        )
        return review

    async def reviews(self, plugin_id: str) -> dict[str, PluginReview]:
        """Every review of ``plugin_id`` by uid."""
        return _decode(await self.kv.get(reviews_key(plugin_id)), dict[str, PluginReview], {})

    async def for_user(self, uid: str) -> list[Plugin]:
        """The catalogue as ``uid`` sees it: enabled state, ratings, reviews; best rated first."""
        entries = self.entries()
        enabled = set(await self.enabled_ids(uid))
        all_reviews = await asyncio.gather(*(self.reviews(entry.id) for entry in entries))
        listed = [
            _personal(entry, reviews, uid, entry.id in enabled)
            for entry, reviews in zip(entries, all_reviews, strict=True)
        ]
        listed.sort(key=lambda p: weighted_rating(p.rating_avg, p.rating_count), reverse=True)
        return listed

    # -- internals ---------------------------------------------------------------------------

    async def _read(self, source: str) -> bytes:
        if source.startswith(("http://", "https://")):
            async with (
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=True) as client,
                client.stream("GET", source) as response,
            ):
                response.raise_for_status()
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_SOURCE_BYTES:
                        raise ValueError(f"larger than {MAX_SOURCE_BYTES} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        return await asyncio.to_thread(_read_file, Path(source))

    async def _update(self, key: str, kind: type[T], empty: T, change: Callable[[T], T]) -> T:
        """Apply ``change`` to the JSON value at ``key`` under its lock; the value before."""
        async with self._locked(key):
            before = _decode(await self.kv.get(key), kind, empty)
            after = change(before)
            if after != before:
                await self.kv.set(key, msgspec.json.encode(after).decode())
            return before

    @asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        lock, token = f"{key}:lock", secrets.token_hex(8)
        deadline = time.monotonic() + _LOCK_WAIT
        delay = 0.005
        while not await self.kv.add(lock, token, ttl=_LOCK_TTL):
            if time.monotonic() > deadline:
                raise CatalogueBusy(f"{key} is locked")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            if await self.kv.get(lock) == token:
                await self.kv.delete(lock)


def _personal(entry: Plugin, reviews: dict[str, PluginReview], uid: str, enabled: bool) -> Plugin:
    """``entry`` with the ratings, the newest reviews (others' anonymous) and ``uid``'s state."""
    count = len(reviews)
    newest = sorted(reviews.values(), key=lambda r: r.rated_at, reverse=True)[:MAX_LISTED_REVIEWS]
    return msgspec.structs.replace(
        entry,
        reviews=[r if r.uid == uid else msgspec.structs.replace(r, uid=ANONYMOUS) for r in newest],
        user_review=reviews.get(uid),
        rating_avg=round(sum(r.score for r in reviews.values()) / count, 2) if count else None,
        rating_count=count,
        enabled=enabled and not entry.deleted,
    )


def _decode(raw: str | None, kind: type[T], empty: T) -> T:
    """A stored JSON value, or ``empty`` when it is missing or unreadable (logged)."""
    if raw is None:
        return empty
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("ignoring an unreadable stored value (%s): %.200s", exc, raw)
        return empty


def _read_file(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise ValueError(f"larger than {MAX_SOURCE_BYTES} bytes")
    return data

"""Plugin routes of the Omi contract (section 3): the catalogue, enabling, reviews."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Annotated
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException
from litestar.params import JSONBody, QueryParameter

from app.api.auth import require_user
from app.api.openapi import USER_SECURITY, errors
from app.config import Settings
from app.core.netguard import check_public_url
from app.core.pinned_transport import AddressRefused, PinnedTransport
from app.plugins.catalogue import Catalogue, CatalogueBusy
from app.plugins.models import Plugin

__all__ = ["SETUP_TIMEOUT", "PluginsController", "setup_completed"]

log = logging.getLogger("omi_backend.api.plugins")

PluginId = Annotated[str, QueryParameter(min_length=1, max_length=128)]
SETUP_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
"""How long a plugin server has to answer the setup-completed check."""
NOT_COMPLETED = "Plugin setup is not completed"


class ReviewIn(msgspec.Struct):
    """Body of ``POST /v1/plugins/review``."""

    score: Annotated[float, msgspec.Meta(ge=1, le=5)]
    review: Annotated[str, msgspec.Meta(max_length=5_000)] = ""


class Status(msgspec.Struct):
    status: str


OK = Status(status="ok")


def _with_uid(url: str, uid: str) -> str:
    """``url?uid=<uid>``, or ``url&uid=<uid>`` when it already has a query."""
    return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode({'uid': uid})}"


async def setup_completed(url: str, uid: str, *, allow_private: bool) -> None:
    """Ask a plugin server whether ``uid`` finished its setup: ``GET url?uid=``.

    Raises:
        ValidationException: (a 400) unless it answers 200 with ``{"is_setup_completed": true}``;
            the detail says whether it said no or could not be asked.
    """
    target = _with_uid(url, uid)
    try:
        await check_public_url(target, allow_private=allow_private)
    except ValueError as exc:
        raise ValidationException(f"Plugin setup cannot be checked: its URL is refused ({exc})") from exc
    try:
        transport = PinnedTransport(allow_private=allow_private)
        async with httpx.AsyncClient(
            timeout=SETUP_TIMEOUT, follow_redirects=False, transport=transport
        ) as client:
            response = await client.get(target)
    except AddressRefused as exc:
        raise ValidationException(f"Plugin setup cannot be checked: its URL is refused ({exc})") from exc
    except httpx.HTTPError as exc:
        log.warning("setup check %s failed: %s: %s", url, type(exc).__name__, exc)
        raise ValidationException(
            f"Plugin setup cannot be checked: the plugin's server did not answer ({type(exc).__name__})"
        ) from exc
    try:
        answer = response.json() if response.status_code == 200 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("is_setup_completed") is not True:
        raise ValidationException(NOT_COMPLETED)


class PluginsController(Controller):
    path = "/"
    guards = (require_user,)
    security = USER_SECURITY
    tags = ("plugins",)

    @get(["/v1/plugins", "/v2/plugins"], raises=errors())
    async def list_plugins(
        self, uid: NamedDependency[str], catalogue: NamedDependency[Catalogue]
    ) -> list[Plugin]:
        """The catalogue with the caller's ``enabled``, ``user_review`` and the ratings, best first."""
        return await catalogue.for_user(uid)

    @post("/v1/plugins/enable", status_code=200, raises=errors(lookup=True, writes=True))
    async def enable_plugin(
        self,
        plugin_id: PluginId,
        uid: NamedDependency[str],
        catalogue: NamedDependency[Catalogue],
        state: State,
    ) -> Status:
        """Enable a plugin for the caller; 404 unknown, 400 while its setup is not completed."""
        entry = _known(catalogue, plugin_id)
        integration = entry.external_integration
        if integration is not None and integration.setup_completed_url:
            settings: Settings = state.settings
            await setup_completed(
                integration.setup_completed_url, uid, allow_private=settings.webhook_allow_private
            )
        await _busy_is_503(catalogue.enable(plugin_id, uid))
        return OK

    @post("/v1/plugins/disable", status_code=200, raises=errors(writes=True))
    async def disable_plugin(
        self, plugin_id: PluginId, uid: NamedDependency[str], catalogue: NamedDependency[Catalogue]
    ) -> Status:
        """Disable a plugin for the caller (an unknown id is fine: it is simply not enabled)."""
        await _busy_is_503(catalogue.disable(plugin_id, uid))
        return OK

    @post("/v1/plugins/review", status_code=200, raises=errors(lookup=True, body=True, writes=True))
    async def review_plugin(
        self,
        plugin_id: PluginId,
        data: JSONBody[ReviewIn],
        uid: NamedDependency[str],
        catalogue: NamedDependency[Catalogue],
    ) -> Status:
        """Review a plugin (score 1..5); the caller's earlier review of it is replaced."""
        _known(catalogue, plugin_id)
        await _busy_is_503(catalogue.review(plugin_id, uid, data.score, data.review))
        return OK


def _known(catalogue: Catalogue, plugin_id: str) -> Plugin:
    entry = catalogue.entry(plugin_id)
    if entry is None or entry.deleted:
        raise NotFoundException("Plugin not found")
    return entry


async def _busy_is_503(change: Awaitable[object]) -> None:
    """Await a change of stored state; a lock that stays taken is a 503, not a 500."""
    try:
        await change
    except CatalogueBusy as exc:
        raise ServiceUnavailableException("the plugin state is busy, try again") from exc

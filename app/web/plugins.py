"""``/plugins``: the plugin catalogue as cards, with enable switches and reviews.

Each card shows a plugin's name, author, description, icon and capabilities, an enable
switch, its setup instructions, its rating and reviews, and a form to write (or replace) the
user's own review. The rules are the API's (:mod:`app.api.plugins`), through the same
:class:`~app.plugins.catalogue.Catalogue`: an entry whose server has a setup-completed check
is enabled only once that server says the user finished the setup (otherwise the card comes
back with the reason); an unknown or deleted entry is a 404; a review is a score from 1 to
5 and replaces the user's earlier one. Every form answers htmx with the card, swapped in
place, and a plain post with a redirect back to the card.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import (
    NoRouteMatchFoundException,
    NotFoundException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.params import PathParameter, URLEncodedBody
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from app.api.plugins import setup_completed
from app.config import Settings
from app.plugins.catalogue import Catalogue, CatalogueBusy
from app.plugins.models import Plugin
from app.web.rendering import done, invalid, page

__all__ = ["DELIVERIES_ROUTE", "EnableForm", "PluginCard", "PluginsPage", "ReviewForm"]

DELIVERIES_ROUTE = "plugin_deliveries"
"""The route of a webhook entry's delivery log, added by the ``omi_webhooks`` plugin; cards
link to it when it exists."""

PluginId = Annotated[str, PathParameter(min_length=1, max_length=128)]
T = TypeVar("T")
_CARD = "plugins/_card.html"
_DETAIL = "plugins/detail.html"


class EnableForm(msgspec.Struct):
    """The enable switch: a checkbox, absent when unticked."""

    enabled: bool = False


class ReviewForm(msgspec.Struct):
    """The review form: a score from 1 to 5 and an optional text."""

    score: Annotated[int, msgspec.Meta(ge=1, le=5)]
    review: Annotated[str, msgspec.Meta(max_length=5_000)] = ""


class PluginCard(msgspec.Struct, frozen=True):
    """A catalogue entry as the user sees it, with the link to its delivery log, if any."""

    plugin: Plugin
    deliveries_url: str | None = None

    @property
    def anchor(self) -> str:
        """The id of the card's element."""
        return f"plugin-{self.plugin.id}"

    @property
    def url(self) -> str:
        """The plugin's own page."""
        return f"/plugins/{quote(self.plugin.id, safe='')}"


def _card(request: HTMXRequest, plugin: Plugin) -> PluginCard:
    deliveries = None
    if plugin.external_integration is not None:
        try:
            deliveries = request.app.route_reverse(DELIVERIES_ROUTE, plugin_id=plugin.id)
        except NoRouteMatchFoundException:  # the omi_webhooks plugin is not loaded
            deliveries = None
    return PluginCard(plugin=plugin, deliveries_url=deliveries)


async def _listed(catalogue: Catalogue, uid: str) -> list[Plugin]:
    return [p for p in await catalogue.for_user(uid) if not p.deleted]


async def _personal(catalogue: Catalogue, uid: str, plugin_id: str) -> Plugin:
    """The entry ``plugin_id`` as ``uid`` sees it; 404 when unknown or deleted."""
    entry = catalogue.entry(plugin_id)
    if entry is None or entry.deleted:
        raise NotFoundException("There is no such plugin.")
    for plugin in await catalogue.for_user(uid):
        if plugin.id == plugin_id:
            return plugin
    raise NotFoundException("There is no such plugin.")


async def _unless_busy(change: Awaitable[T]) -> T:
    try:
        return await change
    except CatalogueBusy as exc:
        raise ServiceUnavailableException("The plugin settings are busy, please try again.") from exc


def _show(
    request: HTMXRequest, card: PluginCard, *, error: str | None = None, notice: str | None = None
) -> Template:
    context: dict[str, Any] = {"card": card, "error": error, "notice": notice, "section": "plugins"}
    if error is not None:
        return invalid(request, _DETAIL, _CARD, **context)
    return page(request, _DETAIL, _CARD, **context)


class PluginsPage(Controller):
    """``/plugins``, ``/plugins/{id}`` and the forms of a card."""

    path = "/plugins"

    @get("", name="plugins")
    async def plugins(
        self, request: HTMXRequest, uid: NamedDependency[str], catalogue: NamedDependency[Catalogue]
    ) -> Template:
        """Every plugin's card, best rated first."""
        cards = [_card(request, p) for p in await _listed(catalogue, uid)]
        return page(
            request,
            "plugins/index.html",
            "plugins/_cards.html",
            section="plugins",
            cards=cards,
            catalogue_error=catalogue.error,
        )

    @get("/{plugin_id:str}")
    async def plugin(
        self,
        request: HTMXRequest,
        plugin_id: PluginId,
        uid: NamedDependency[str],
        catalogue: NamedDependency[Catalogue],
    ) -> Template:
        """One plugin's page, or its card."""
        return _show(request, _card(request, await _personal(catalogue, uid, plugin_id)))

    @post("/{plugin_id:str}/enabled", status_code=200)
    async def enable(
        self,
        request: HTMXRequest,
        plugin_id: PluginId,
        data: URLEncodedBody[EnableForm],
        uid: NamedDependency[str],
        catalogue: NamedDependency[Catalogue],
        state: State,
    ) -> Template | Response[Any]:
        """Turn the plugin on or off for the user (on: after its setup check, if it has one)."""
        entry = (await _personal(catalogue, uid, plugin_id)).external_integration
        if data.enabled:
            if entry is not None and entry.setup_completed_url:
                settings: Settings = state.settings
                try:
                    await setup_completed(
                        entry.setup_completed_url, uid, allow_private=settings.webhook_allow_private
                    )
                except ValidationException as exc:
                    plugin = await _personal(catalogue, uid, plugin_id)
                    return _show(request, _card(request, plugin), error=f"Not enabled: {exc.detail}.")
            await _unless_busy(catalogue.enable(plugin_id, uid))
        else:
            await _unless_busy(catalogue.disable(plugin_id, uid))
        return await self._after(request, catalogue, uid, plugin_id)

    @post("/{plugin_id:str}/review", status_code=200)
    async def review(
        self,
        request: HTMXRequest,
        plugin_id: PluginId,
        data: URLEncodedBody[ReviewForm],
        uid: NamedDependency[str],
        catalogue: NamedDependency[Catalogue],
    ) -> Template | Response[Any]:
        """Write the user's review of the plugin, replacing their earlier one."""
        await _personal(catalogue, uid, plugin_id)
        await _unless_busy(catalogue.review(plugin_id, uid, data.score, data.review.strip()))
        return await self._after(request, catalogue, uid, plugin_id, notice="Thank you for your review.")

    @staticmethod
    async def _after(
        request: HTMXRequest, catalogue: Catalogue, uid: str, plugin_id: str, notice: str | None = None
    ) -> Template | Response[Any]:
        card = _card(request, await _personal(catalogue, uid, plugin_id))
        return done(
            request, f"{card.url}#{quote(card.anchor, safe='')}", _CARD, card=card, error=None, notice=notice
        )

"""The delivery log of a webhook catalogue entry: ``/plugins/{id}/deliveries``.

The ``omi_webhooks`` plugin adds this page to the web app through ``register_pages``, and
its templates through ``templates_dir`` (they are ``plugins/omi_webhooks/*.html``). The
signed-in user sees their own log of that entry only (the log is kept per entry and user),
newest first: when, what, the status, the attempt, how long it took and the error. A
delivery still waiting for its next attempt, or given up after its last one, has a Retry
button that puts it back in the queue, due now. The page never shows the webhook secret.
"""

from __future__ import annotations

import inspect
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Annotated, Any, Protocol, runtime_checkable
from urllib.parse import quote

import msgspec
from litestar import Controller, Response, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from app.core.ports import KeyValue
from app.plugins import done, page
from builtin_plugins.omi_webhooks.state import DeliveryRecord, read_deliveries, retryable
from builtin_plugins.omi_webhooks.targets import _as_dict, webhook_targets

__all__ = [
    "LOG_LIMIT",
    "ROUTE_NAME",
    "TEMPLATES",
    "DeliveriesPage",
    "LogLine",
    "Webhooks",
    "deliveries_pages",
]

TEMPLATES: Traversable = files(__package__) / "templates"
"""The plugin's templates folder (``templates_dir``)."""
ROUTE_NAME = "plugin_deliveries"
"""The name of the page's route: the plugins page links entries to it when it exists."""
LOG_LIMIT = 50
"""Log records shown, newest first."""
_FULL = "plugins/omi_webhooks/deliveries.html"
_FRAGMENT = "plugins/omi_webhooks/_log.html"

PluginId = Annotated[str, PathParameter(min_length=1, max_length=128)]
WebhookId = Annotated[str, PathParameter(min_length=1, max_length=64)]


@runtime_checkable
class Webhooks(Protocol):
    """What the page needs of the plugin (:class:`~builtin_plugins.omi_webhooks.OmiWebhooks`)."""

    catalogue: Any

    def key_value(self) -> KeyValue:
        """The KeyValue port the log and the queue are kept in."""
        ...

    async def retry(self, plugin_id: str, uid: str, webhook_id: str) -> bool:
        """Send a delivery again now; ``False`` when the user has no such delivery."""
        ...


class LogLine(msgspec.Struct, frozen=True):
    """One record of the log, and whether it gets a Retry button."""

    record: DeliveryRecord
    retry: bool

    @property
    def ok(self) -> bool:
        """Whether that attempt was delivered (a 2xx)."""
        return self.record.status is not None and 200 <= self.record.status < 300


async def _entry_name(webhooks: Webhooks, plugin_id: str) -> str:
    """The name of the webhook entry ``plugin_id``; 404 when it is not one (or is deleted)."""
    catalogue = webhooks.catalogue
    targets = [
        *await webhook_targets(catalogue, "memory_creation"),
        *await webhook_targets(catalogue, "transcript_processed"),
    ]
    if plugin_id not in {target.plugin_id for target in targets}:
        raise NotFoundException("There is no such webhook plugin.")
    entry = catalogue.entry(plugin_id)
    if inspect.isawaitable(entry):
        entry = await entry
    name = _as_dict(entry).get("name")
    return name if isinstance(name, str) and name else plugin_id


async def _lines(webhooks: Webhooks, plugin_id: str, uid: str) -> list[LogLine]:
    """The log, newest first; the newest record of each failed delivery that can be sent again
    gets the button."""
    kv = webhooks.key_value()
    records = await read_deliveries(kv, plugin_id, uid, limit=LOG_LIMIT)
    newest: dict[str, DeliveryRecord] = {}
    for record in records:
        newest.setdefault(record.webhook_id, record)
    failed = [r.webhook_id for r in newest.values() if r.event == "memory_created" and not _delivered(r)]
    again = await retryable(kv, plugin_id, uid, failed)
    return [LogLine(r, retry=r.webhook_id in again and newest[r.webhook_id] is r) for r in records]


def _delivered(record: DeliveryRecord) -> bool:
    return record.status is not None and 200 <= record.status < 300


class DeliveriesPage(Controller):
    """``/plugins/{id}/deliveries`` and its Retry buttons."""

    path = "/plugins/{plugin_id:str}/deliveries"

    @get("", name=ROUTE_NAME)
    async def deliveries(
        self,
        request: HTMXRequest,
        plugin_id: PluginId,
        uid: NamedDependency[str],
        webhooks: NamedDependency[Webhooks],
    ) -> Template:
        """The log page, or its ``_log`` fragment."""
        name = await _entry_name(webhooks, plugin_id)
        lines = await _lines(webhooks, plugin_id, uid)
        return page(
            request,
            _FULL,
            _FRAGMENT,
            section="plugins",
            plugin_id=plugin_id,
            name=name,
            lines=lines,
            sent=None,
        )

    @post("/{webhook_id:str}/retry", status_code=200)
    async def retry(
        self,
        request: HTMXRequest,
        plugin_id: PluginId,
        webhook_id: WebhookId,
        uid: NamedDependency[str],
        webhooks: NamedDependency[Webhooks],
    ) -> Template | Response[Any]:
        """Put the delivery back in the queue, due now; 404 when the user has no such delivery."""
        name = await _entry_name(webhooks, plugin_id)
        if not await webhooks.retry(plugin_id, uid, webhook_id):
            raise NotFoundException("There is no such delivery to send again.")
        lines = await _lines(webhooks, plugin_id, uid)
        return done(
            request,
            f"/plugins/{quote(plugin_id, safe='')}/deliveries",
            _FRAGMENT,
            section="plugins",
            plugin_id=plugin_id,
            name=name,
            lines=lines,
            sent=webhook_id,
        )


def deliveries_pages(webhooks: Webhooks) -> list[Any]:
    """The page, bound to the plugin object (``register_pages``)."""
    return [
        Router(
            path="/",
            route_handlers=[DeliveriesPage],
            dependencies={"webhooks": Provide(lambda: webhooks, use_cache=True, sync_to_thread=False)},
        )
    ]

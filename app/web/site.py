"""``build_web``: the web pages as one router, plus what the Litestar app needs for them.

Everything under the web router gets, from the router: the sign-in guard, the server-side
session, CSRF checks, the security headers, the HTML error pages, htmx requests
(``request.htmx``) and the ``uid`` of the signed-in user. The API routes (``/v1``, ``/v2``,
``/v3``, ``/listen``) and the plugins' routes live outside it, so they stay token-only:
no session, no cookie, no CSRF.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from jinja2 import BaseLoader
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins import PluginProtocol
from litestar.plugins.htmx import HTMXConfig, HTMXPlugin, HTMXRequest
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.stores.base import Store
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from app.config import Settings
from app.core.ports import KeyValue
from app.core.tokens import TokenService
from app.web.auth import LoginPages, WebAuth, provide_web_uid
from app.web.errors import exception_handlers
from app.web.live import LiveFeed, LivePage, build_channels
from app.web.memories import MemoryListPage
from app.web.memory import MemoryPage
from app.web.plugins import PluginsPage
from app.web.rendering import STATIC_DIR, STATIC_PATH, Assets, environment, template_config
from app.web.security import CSRFGuard, SecurityHeaders, csrf_config, load_csrf_secret
from app.web.sessions import KeyValueStore, WebSessionConfig
from app.web.settings import SettingsPage

__all__ = ["PAGES", "SESSION_COOKIE", "Web", "build_web"]

log = logging.getLogger("omi_backend.web")

PAGES: tuple[ControllerRouterHandler, ...] = (
    LoginPages,
    MemoryListPage,
    MemoryPage,
    PluginsPage,
    SettingsPage,
    LivePage,
)
"""The page families, one module each. A new page family is added here."""

SESSION_COOKIE = "omi_session"
SESSION_STORE = "web_sessions"
HTMX = "vendor/htmx.min.js"
SSE = "vendor/htmx-ext-sse.min.js"


@dataclass(frozen=True, slots=True)
class Web:
    """The web pages' share of the Litestar app (see ``create_app``)."""

    route_handlers: list[ControllerRouterHandler]
    template_config: TemplateConfig[JinjaTemplateEngine]
    plugins: list[PluginProtocol]
    stores: dict[str, Store]
    live_feed: LiveFeed
    on_startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def build_web(
    settings: Settings,
    kv: KeyValue,
    *,
    pages: Sequence[ControllerRouterHandler] = PAGES,
    plugin_templates: Mapping[str, BaseLoader] | None = None,
) -> Web:
    """The web router, the static files, the template engine, the htmx and channels plugins,
    the session store and the live feed.

    Args:
        settings: The server's settings (``OMI_WEB_*``).
        kv: The KeyValue port: sessions and the CSRF secret live there.
        pages: The page families to serve (controllers, routers or handlers); plugins' pages
            (``register_pages``) are added here.
        plugin_templates: Template loaders of plugins, by plugin name; their templates are
            named ``plugins/<name>/<template>``.
    """
    assets = Assets()
    for vendored in (HTMX, SSE):
        if not assets.has(vendored):
            log.warning(
                "%s is missing: the pages work, but without it (run `make install`)", STATIC_DIR / vendored
            )
    channels = build_channels(settings)
    live_feed = LiveFeed(channels, prefix=settings.redis_prefix)
    csrf = csrf_config(settings.web_secret)
    sessions = WebSessionConfig(
        key=SESSION_COOKIE,
        store=SESSION_STORE,
        max_age=int(settings.web_session_days * 86_400),
        httponly=True,
        samesite="lax",
        secure=settings.web_secure_cookies,
    )
    auth = WebAuth(TokenService(kv))
    router = Router(
        path="/",
        route_handlers=list(pages),
        guards=[auth.guard],
        middleware=[
            SecurityHeaders(pages=True, secure_cookies=settings.web_secure_cookies),
            sessions.middleware,
            DefineMiddleware(CSRFGuard, config=csrf),
        ],
        dependencies={
            "uid": Provide(provide_web_uid),
            "web_auth": Provide(lambda: auth, use_cache=True, sync_to_thread=False),
            "live_feed": Provide(lambda: live_feed, use_cache=True, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        request_class=HTMXRequest,
        include_in_schema=False,
    )
    static = create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        cache_control=CacheControlHeader(public=True, max_age=365 * 86_400),
        middleware=[SecurityHeaders(pages=False, secure_cookies=settings.web_secure_cookies)],
        include_in_schema=False,
    )

    async def load_secret() -> None:
        if not settings.web_secret:
            csrf.secret = await load_csrf_secret(kv)

    return Web(
        route_handlers=[router, static],
        template_config=template_config(environment(assets, plugin_templates)),
        plugins=[HTMXPlugin(HTMXConfig(set_request_class_globally=False)), channels],
        stores={SESSION_STORE: KeyValueStore(kv, prefix="web:sessions:")},
        live_feed=live_feed,
        on_startup=[load_secret],
    )

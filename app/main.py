"""``create_app(settings)``: the one place where adapters, plugins and routes are wired."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.logging.config import LoggingConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.status_codes import (
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_507_INSUFFICIENT_STORAGE,
)

from app.adapters import (
    build_blob_store,
    build_embedder,
    build_key_value,
    build_language_model,
    build_memory_store,
    build_speech_to_text,
    build_vector_index,
)
from app.api.auth import Authenticator, provide_uid
from app.api.listen import listen as listen_socket
from app.api.memories import MemoriesController
from app.api.messages import MessagesController
from app.api.openapi import COMPONENTS
from app.api.plugins import PluginsController
from app.api.speech_profile import SpeechProfileController
from app.config import Settings
from app.core.errors import BackendUnavailable, StorageFull
from app.core.listen import ListenConfig
from app.core.listen_manager import ListenManager
from app.core.models import TranscriptSegment
from app.core.pipeline import MemoryPipeline
from app.core.services import Services
from app.core.tokens import TokenService
from app.logsafe import redact
from app.plugins.catalogue import Catalogue
from app.plugins.context import PluginContext
from app.plugins.host import PluginHost
from app.plugins.manager import PluginLoad, build_plugin_manager
from app.plugins.types import TranscriptSession
from app.web import PAGES, build_web
from app.web.rendering import folder_loader

__all__ = ["build_key_value", "build_services", "create_app"]

log = logging.getLogger("omi_backend")


def build_services(settings: Settings) -> Services:
    """One adapter per port, chosen from the settings (the builders in :mod:`app.adapters`);
    nothing else branches on the choice."""
    embedder = build_embedder(settings)
    return Services(
        store=build_memory_store(settings),
        index=build_vector_index(settings),
        blobs=build_blob_store(settings),
        kv=build_key_value(settings),
        embedder=embedder,
        llm=build_language_model(settings, embedder),
        stt=build_speech_to_text(settings),
    )


def _firebase(settings: Settings) -> Any:
    if not settings.firebase_project_id:
        return None
    from app.backends.firebase_auth import FirebaseVerifier

    return FirebaseVerifier(settings.firebase_project_id)


@get("/health", tags=["health"])
async def health() -> dict[str, str]:
    """Liveness for load balancers (no credentials needed, no data returned)."""
    return {"status": "ok"}


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Unexpected failures: logged with the traceback, answered as JSON without internals."""
    if isinstance(exc, HTTPException):
        return Response({"status_code": exc.status_code, "detail": exc.detail}, status_code=exc.status_code)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        {"status_code": 500, "detail": "internal server error"}, status_code=HTTP_500_INTERNAL_SERVER_ERROR
    )


def _invalid(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """A 400 as Litestar answers it, but its detail (which names the URL with its query string)
    never repeats a credential a client put there (``?token=``: :func:`app.logsafe.redact`)."""
    content: dict[str, Any] = {"status_code": exc.status_code, "detail": redact(exc.detail)}
    if exc.extra:
        content["extra"] = exc.extra
    return Response(content, status_code=exc.status_code, headers=exc.headers)


def _unavailable(request: Request[Any, Any, Any], exc: BackendUnavailable) -> Response[Any]:
    """A vendor that stayed down after the adapter's retries: 503, JSON, retry later."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return Response(
        {"status_code": 503, "detail": f"{exc.backend} is unavailable, try again later"},
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def _storage_full(request: Request[Any, Any, Any], exc: StorageFull) -> Response[Any]:
    """The data directory's disk is full: 507, JSON; nothing of the request was half-kept."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return Response(
        {"status_code": 507, "detail": "the server's disk is full: nothing was saved, try again later"},
        status_code=HTTP_507_INSUFFICIENT_STORAGE,
        headers={"Retry-After": "60"},
    )


def create_app(
    settings: Settings | None = None, services: Services | None = None, plugins: PluginLoad | None = None
) -> Litestar:
    """The Litestar application for ``settings`` (read from the environment when omitted).

    ``services`` lets a caller (tests, benchmarks) supply its own adapters; they are closed
    with the app either way. ``plugins`` replaces the installed plugins (tests).
    """
    settings = settings or Settings.from_env()
    chosen = services or build_services(settings)
    plugins = plugins or build_plugin_manager(blocked=settings.blocked_plugins)
    for name, error in plugins.failures:
        log.error("plugin %s failed to load: %s", name, error)
    # The catalogue asks the host for the installed plugins' entries, the host asks the
    # catalogue who enabled what: the lambda reads ``host`` once it exists.
    catalogue = Catalogue(chosen.kv, installed=lambda: host.plugin_infos(), source=settings.plugins_catalogue)
    host = PluginHost(plugins.pm, timeout=settings.plugin_timeout, is_enabled=catalogue.is_enabled)
    for failure in plugins.failures:
        host.record_failure(failure.name, "load", failure.error)
    pipeline = MemoryPipeline(chosen, host)
    web = build_web(
        settings,
        chosen.kv,
        pages=(*PAGES, *host.pages()),
        plugin_templates={name: folder_loader(folder) for name, folder in host.template_dirs().items()},
    )

    async def on_transcript(session_id: str, uid: str, segments: list[TranscriptSegment]) -> None:
        await host.on_transcript(TranscriptSession(id=session_id, uid=uid), segments)

    listen = ListenManager(
        chosen.stt,
        pipeline,
        on_transcript,
        ListenConfig(
            silence_seconds=settings.memory_silence_seconds,
            ping_seconds=settings.listen_ping_seconds,
            idle_seconds=settings.listen_idle_seconds,
        ),
    )
    authenticator = Authenticator(
        TokenService(chosen.kv), admin_key=settings.admin_key, firebase=_firebase(settings)
    )

    context = PluginContext(
        settings=settings,
        kv=chosen.kv,
        store=chosen.store,
        blobs=chosen.blobs,
        llm=chosen.llm,
        create_memory=pipeline.create,
        is_enabled=catalogue.is_enabled,
        extras={"catalogue": catalogue, "live_feed": web.live_feed},
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await chosen.embedder.embed(["warm up"])  # load the model before the first request
        fixed = await pipeline.reindex_pending()
        if fixed:
            log.info("re-indexed %d memories left pending", fixed)
        await catalogue.load()
        await host.on_startup(context)
        pipeline.start_background()  # what a crash left owed: announced to the plugins, retried
        finished = await listen.recover()
        if finished:
            log.info("finished %d live-session memories left open", finished)
        try:
            yield
        finally:
            await listen.close()
            await pipeline.stop_background()
            await host.on_shutdown()
            host.close()
            await chosen.close()

    return Litestar(
        route_handlers=[
            health,
            MemoriesController,
            MessagesController,
            PluginsController,
            SpeechProfileController,
            listen_socket,
            *host.routes(),
            *web.route_handlers,
        ],
        dependencies={
            "uid": Provide(provide_uid),
            "services": Provide(lambda: chosen, use_cache=True, sync_to_thread=False),
            "pipeline": Provide(lambda: pipeline, use_cache=True, sync_to_thread=False),
            "catalogue": Provide(lambda: catalogue, use_cache=True, sync_to_thread=False),
        },
        state=State(
            {
                "settings": settings,
                "authenticator": authenticator,
                "plugins": host,
                "plugin_load": plugins,
                "catalogue": catalogue,
                "listen": listen,
                "pipeline": pipeline,
                "services": chosen,
                "plugin_context": context,
            }
        ),
        lifespan=[lifespan],
        on_startup=web.on_startup,
        template_config=web.template_config,
        plugins=web.plugins,
        stores=web.stores,
        exception_handlers={
            HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
            BackendUnavailable: _unavailable,
            StorageFull: _storage_full,
            ValidationException: _invalid,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="omi-backend", version="0.1.0", path="/schema", components=COMPONENTS
        ),
        # The root logger is the process's (``omi-backend serve`` configures it, app/logsafe.py),
        # not each app's: an app built in-process (tests, embedding) leaves it alone.
        logging_config=LoggingConfig(configure_root_logger=False),
        debug=False,
    )

"""The hooks the server calls, as typed, documented, module-level specifications.

Every hook may be implemented as a plain function or as a coroutine function: the host runs a
plain one in a worker thread and awaits a coroutine one, each with a timeout and on its own,
so one plugin's error or slowness never reaches the pipeline or another plugin. An
implementation may accept any subset of a hook's parameters, by name.

``docs/plugins.md`` has one section per hook here, headed by its exact signature; a test
fails when one is missing.
"""

from __future__ import annotations

from typing import Any

from app.core.models import Memory, Message, PluginResult, TranscriptSegment
from app.plugins.context import PluginContext
from app.plugins.markers import hookspec
from app.plugins.types import PluginInfo, TranscriptSession

__all__ = [
    "on_memory_created",
    "on_memory_processing",
    "on_shutdown",
    "on_startup",
    "on_transcript",
    "plugin_info",
    "register_pages",
    "register_routes",
    "templates_dir",
]


@hookspec
def on_transcript(session: TranscriptSession, segments: list[TranscriptSegment]) -> None:
    """Called after each final result of a live transcription session.

    It fires once per final result the speech-to-text service sends, while the user is
    still talking, so it is called often and should return quickly. Only plugins the
    session's user enabled (and plugins that are always on) are called.

    Args:
        session: The live session: its id and the id of the user speaking.
        segments: The segments of this final result, in order, with times in seconds from
            the start of the session. They are new segments only, not the whole transcript.

    Returns:
        Nothing; a return value is ignored.
    """


@hookspec
def on_memory_created(uid: str, memory: Memory) -> list[Message] | None:
    """Called after a memory is stored.

    It fires once per memory, after the memory is structured, stored and indexed, whichever
    way it was made (``POST /v1/memories``, the end of a live session, an integration). It
    never fires for a discarded memory: the pipeline stores those but does not call plugins
    on them. Only plugins the user enabled (and plugins that are always on) are called.

    Args:
        uid: The id of the user who owns the memory (the memory's JSON has no owner field).
        memory: The stored memory, with its structured summary and transcript.

    Returns:
        Messages for the user, or ``None``. They are returned to the Omi app with the memory
        and kept in the user's messages; a message without ``plugin_id`` gets the plugin's.
    """


@hookspec
def plugin_info() -> PluginInfo | None:
    """Called to build the plugin catalogue: the plugin declares its entry in it.

    It is called once at start-up and again when the set of plugins changes; its answer is
    kept. Unlike the other hooks it must be a plain (not ``async``) function and must not do
    I/O: it only describes the plugin.

    Returns:
        The plugin's catalogue entry, or ``None`` for a plugin that is not shown in the
        catalogue. ``always_on=True`` makes it run for every user without being enabled.
    """


@hookspec
def on_startup(context: PluginContext) -> None:
    """Called once when the server starts, before it serves any request.

    A plugin keeps ``context`` (the key-value store, the memory store, the language model,
    a way to create memories, the enabled check) for its later hooks, and may start
    background work here. A failure is recorded against the plugin; the server still starts.

    Args:
        context: The server's public plugin API.

    Returns:
        Nothing; a return value is ignored.
    """


@hookspec
def on_shutdown() -> None:
    """Called once when the server stops: stop background work, flush what must persist.

    Returns:
        Nothing; a return value is ignored.
    """


@hookspec
def register_routes() -> list[Any] | None:
    """Called once while the app is built: the plugin adds HTTP routes to the server.

    Like ``plugin_info`` it must be a plain function without I/O. Routes are Litestar route
    handlers, controllers or routers; they are mounted as given, so a plugin authenticates
    its own routes (the integrations check their per-user keys).

    Returns:
        Route handlers, controllers or routers, or ``None``.
    """


@hookspec
def on_memory_processing(uid: str, memory: Memory) -> list[PluginResult] | None:
    """Called while a memory is made, after it is structured and before it is stored.

    It fires for kept memories only (never for discarded ones), for plugins the user enabled.
    Reprocessing a memory calls it again and the new results replace the old ones.

    Args:
        uid: The id of the user who owns the memory.
        memory: The structured memory, not stored yet; do not change it.

    Returns:
        Results to add to the memory's ``plugins_results``, or ``None``. A result without a
        ``plugin_id`` gets the plugin's name.
    """


@hookspec
def register_pages() -> list[Any] | None:
    """Called once while the app is built: the plugin adds pages to the web app.

    Like ``register_routes`` it must be a plain function without I/O. The pages are mounted
    beside the server's own: only a signed-in user reaches them, every form and htmx request
    must carry the CSRF token, and a handler may ask for ``uid`` (the signed-in user),
    ``services``, ``pipeline`` and ``catalogue``. A handler answers with
    ``app.plugins.page(request, "plugins/<plugin name>/<template>", ...)``.

    Returns:
        Route handlers or controllers, or ``None``.
    """


@hookspec
def templates_dir() -> Any:
    """Called once while the app is built: where the plugin's page templates are.

    Like ``plugin_info`` it must be a plain function without I/O. The templates in that
    folder are named ``plugins/<plugin name>/<path in the folder>``; they may extend the
    server's ``base.html``.

    Returns:
        A folder: a ``pathlib.Path``, a path string, or an ``importlib.resources`` traversable
        (``importlib.resources.files(__package__) / "templates"``); or ``None``.
    """

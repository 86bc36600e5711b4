"""Isolated dispatch of hooks to plugins: one typed method per hook.

Each hook implementation runs on its own: a plain function in a worker thread (so a slow
plugin never blocks the event loop), a coroutine function awaited; all of one hook's
implementations run concurrently, each with a timeout. An exception or a timeout is logged
and recorded against that plugin (:meth:`PluginHost.status`) and the dispatch goes on. A
plugin runs for a user only if that user enabled it, unless it declares itself always on.
Cancelling the caller cancels the dispatch.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import msgspec
import pluggy

from app.core.models import Memory, Message, PluginResult, TranscriptSegment, utcnow
from app.core.pipeline import Announced
from app.plugins.context import PluginContext
from app.plugins.types import PluginInfo, TranscriptSession

__all__ = ["EnabledCheck", "PluginError", "PluginHost", "PluginStatus"]

log = logging.getLogger("omi_backend.plugins")

EnabledCheck = Callable[[str, str], Awaitable[bool]]
"""``await is_enabled(plugin_name, uid)``: whether ``uid`` enabled the plugin."""

_NO_RESULT: Any = object()  # what a skipped (not enabled) implementation yields
_FAILED: Any = object()  # what an implementation that raised or timed out yields
_DETAIL_CHARS = 4_000


class PluginError(msgspec.Struct, frozen=True, kw_only=True):
    """One failure of a plugin, as shown on its page.

    Attributes:
        at: When it happened.
        hook: The hook being called (``load`` for a plugin that failed to load).
        message: ``ExceptionType: message``, or what timed out.
        detail: The end of the traceback, if there was one.
    """

    at: datetime
    hook: str
    message: str
    detail: str = ""


class PluginStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A plugin's health.

    Attributes:
        name: The name it is registered under.
        registered: Whether it is registered (a plugin that failed to load is not).
        info: Its catalogue entry, if it declares one.
        error_count: How many failures in all since the host started.
        errors: The last failures, oldest first.
    """

    name: str
    registered: bool
    info: PluginInfo | None
    error_count: int
    errors: list[PluginError]


class PluginHost:
    """Calls the plugins of a plugin manager, each on its own.

    Args:
        pm: The plugin manager, with the hook specifications added.
        timeout: Seconds one implementation may take before it is abandoned.
        is_enabled: ``await is_enabled(plugin_name, uid)`` says whether a user enabled a
            plugin; ``None`` runs every plugin for everyone. Not asked for plugins that are
            always on.
        max_errors: How many failures to keep per plugin.
        max_threads: Size of the thread pool plain-function plugins run in.
        clock: The time failures are recorded at.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        *,
        timeout: float,
        is_enabled: EnabledCheck | None = None,
        max_errors: int = 50,
        max_threads: int | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pm = pm
        self.timeout = timeout
        self._is_enabled = is_enabled
        self._clock = clock
        self._max_errors = max_errors
        self._errors: dict[str, deque[PluginError]] = {}
        self._error_counts: dict[str, int] = {}
        self._infos: dict[str, PluginInfo] = {}
        self._infos_for: tuple[tuple[str, int], ...] | None = None
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="omi-plugin")
        self._abandoned: set[asyncio.Future[Any]] = set()

    # -- hooks -------------------------------------------------------------------------------

    async def on_transcript(self, session: TranscriptSession, segments: list[TranscriptSegment]) -> None:
        """Call ``on_transcript`` on the plugins ``session.uid`` enabled."""
        caller = self.pm.hook.on_transcript
        await self._dispatch(caller, {"session": session, "segments": segments}, session.uid)

    async def on_memory_created(self, uid: str, memory: Memory) -> list[Message]:
        """Call ``on_memory_created`` on the plugins ``uid`` enabled; returns their messages.

        Messages come in pluggy's call order (the last registered plugin first); one without
        a ``plugin_id`` gets the name of the plugin that returned it.
        """
        return (await self.announce(uid, memory)).messages

    async def announce(self, uid: str, memory: Memory, only: Collection[str] | None = None) -> Announced:
        """:meth:`on_memory_created`, on the plugins named in ``only`` if given, and which of
        them raised or timed out (to be called again: see ``MemoryPipeline``)."""
        caller = self.pm.hook.on_memory_created
        outcomes = await self._outcomes(caller, {"uid": uid, "memory": memory}, uid, only)
        messages: list[Message] = []
        for name, result in _successes(outcomes):
            if result is None:
                continue
            if not isinstance(result, list) or not all(isinstance(m, Message) for m in result):
                self._record(name, caller.name, f"returned {type(result).__name__}, not list[Message]")
                continue
            messages.extend(
                m if m.plugin_id is not None else msgspec.structs.replace(m, plugin_id=name) for m in result
            )
        return Announced(messages=messages, failed=[name for name, result in outcomes if result is _FAILED])

    async def on_memory_processing(self, uid: str, memory: Memory) -> list[PluginResult]:
        """Call ``on_memory_processing`` on the plugins ``uid`` enabled; returns their results."""
        caller = self.pm.hook.on_memory_processing
        results = await self._dispatch(caller, {"uid": uid, "memory": memory}, uid)
        collected: list[PluginResult] = []
        for name, result in results:
            if result is None:
                continue
            if not isinstance(result, list) or not all(isinstance(r, PluginResult) for r in result):
                self._record(name, caller.name, f"returned {type(result).__name__}, not list[PluginResult]")
                continue
            collected.extend(r if r.plugin_id else msgspec.structs.replace(r, plugin_id=name) for r in result)
        return collected

    async def on_startup(self, context: PluginContext) -> None:
        """Call ``on_startup`` on every plugin (not per user)."""
        await self._dispatch(self.pm.hook.on_startup, {"context": context}, None)

    async def on_shutdown(self) -> None:
        """Call ``on_shutdown`` on every plugin (not per user)."""
        await self._dispatch(self.pm.hook.on_shutdown, {}, None)

    def routes(self) -> list[Any]:
        """The route handlers every plugin registers, each plugin's failure recorded, not raised."""
        return self._handlers(self.pm.hook.register_routes)

    def pages(self) -> list[Any]:
        """The web pages every plugin registers (``register_pages``), failures recorded."""
        return self._handlers(self.pm.hook.register_pages)

    def template_dirs(self) -> dict[str, Traversable]:
        """Each plugin's templates folder (``templates_dir``), by plugin name; failures recorded."""
        folders: dict[str, Traversable] = {}
        for name, result in self._plain(self.pm.hook.templates_dir):
            folder = Path(result) if isinstance(result, str | os.PathLike) else result
            if isinstance(folder, Traversable) and folder.is_dir():
                folders[name] = folder
            elif result is not None:
                self._record(name, "templates_dir", f"{str(result)!r} is not a folder")
        return folders

    def _handlers(self, caller: pluggy.HookCaller) -> list[Any]:
        handlers: list[Any] = []
        for name, result in self._plain(caller):
            if isinstance(result, list):
                handlers.extend(result)
            elif result is not None:
                self._record(name, caller.name, f"returned {type(result).__name__}, not a list")
        return handlers

    def _plain(self, caller: pluggy.HookCaller) -> list[tuple[str, Any]]:
        """Call a plain, build-time hook of every plugin in registration order; failures recorded."""
        results: list[tuple[str, Any]] = []
        for impl in caller.get_hookimpls():
            name = self._name(impl)
            try:
                results.append((name, impl.function()))
            except Exception as exc:
                self._fail(name, caller.name, exc)
        return results

    def plugin_infos(self) -> list[PluginInfo]:
        """The catalogue entries the plugins declare, in registration order."""
        return list(self._info_map().values())

    def info(self, name: str) -> PluginInfo | None:
        """The catalogue entry the plugin registered as ``name`` declares, if any."""
        return self._info_map().get(name)

    # -- status ------------------------------------------------------------------------------

    def record_failure(self, name: str, hook: str, message: str) -> None:
        """Record a failure found outside a dispatch (e.g. ``hook="load"`` at start-up)."""
        self._record(name, hook, message)

    def errors(self, name: str) -> list[PluginError]:
        """The last failures of the plugin named ``name``, oldest first."""
        return list(self._errors.get(name, ()))

    def status(self) -> list[PluginStatus]:
        """Every registered plugin's health, then that of plugins with failures that are gone."""
        names = [name for name, plugin in self.pm.list_name_plugin() if plugin is not None]
        names += [name for name in self._errors if name not in names]
        infos = self._info_map()
        return [
            PluginStatus(
                name=name,
                registered=self.pm.has_plugin(name),
                info=infos.get(name),
                error_count=self._error_counts.get(name, 0),
                errors=self.errors(name),
            )
            for name in names
        ]

    def close(self) -> None:
        """Stop the plugin threads once they finish what they are running."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch(
        self, caller: pluggy.HookCaller, kwargs: Mapping[str, object], uid: str | None
    ) -> list[tuple[str, Any]]:
        """Run every implementation of ``caller`` concurrently; (name, result) of each success.

        With a ``uid``, only the plugins that user enabled (or that are always on) run.
        """
        return _successes(await self._outcomes(caller, kwargs, uid))

    async def _outcomes(
        self,
        caller: pluggy.HookCaller,
        kwargs: Mapping[str, object],
        uid: str | None,
        only: Collection[str] | None = None,
    ) -> list[tuple[str, Any]]:
        """:meth:`_dispatch` (of the plugins in ``only``, if given), failures (``_FAILED``) and
        skipped plugins (``_NO_RESULT``) included."""
        impls = [
            impl
            for impl in reversed(caller.get_hookimpls())  # pluggy's call order
            if only is None or self._name(impl) in only
        ]
        if not impls:
            return []
        return list(await asyncio.gather(*(self._call(caller.name, impl, kwargs, uid) for impl in impls)))

    def _name(self, impl: pluggy.HookImpl) -> str:
        return self.pm.get_name(impl.plugin) or impl.plugin_name

    async def _call(
        self, hook: str, impl: pluggy.HookImpl, kwargs: Mapping[str, object], uid: str | None
    ) -> tuple[str, Any]:
        name = self._name(impl)
        if uid is not None and not await self._enabled(name, uid):
            return name, _NO_RESULT
        args = {arg: kwargs[arg] for arg in impl.argnames}
        try:
            return name, await self._run(impl.function, args)
        except TimeoutError:
            log.warning("plugin %s timed out in %s after %s s", name, hook, self.timeout)
            self._record(name, hook, f"timed out after {self.timeout} s")
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the caller is cancelled: let it through
            self._fail(name, hook, exc)  # the plugin cancelled itself
        except Exception as exc:
            self._fail(name, hook, exc)
        return name, _FAILED

    async def _run(self, function: Callable[..., object], args: dict[str, object]) -> object:
        """``function(**args)`` within the timeout, as a task of its own."""
        task = asyncio.ensure_future(self._invoke(function, args))
        try:
            # Not asyncio.wait_for: it waits for a timed-out task to finish cancelling, and a
            # plugin that swallows the cancellation would then stall the whole dispatch.
            done, _ = await asyncio.wait((task,), timeout=self.timeout)
        finally:
            if not task.done():  # timed out, or the caller is cancelled
                task.cancel()
                self._abandon(task)
        if not done:
            raise TimeoutError
        return task.result()

    async def _invoke(self, function: Callable[..., object], args: dict[str, object]) -> object:
        """Await a coroutine function; run a plain one in the plugin thread pool."""
        if inspect.iscoroutinefunction(function):
            result = await function(**args)
        else:
            call = functools.partial(contextvars.copy_context().run, function, **args)
            result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        if inspect.isawaitable(result):  # a plain function may hand back an awaitable
            result = await result
        return result

    def _abandon(self, future: asyncio.Future[Any]) -> None:
        """Keep a reference to a cancelled task until it ends, and retrieve its outcome."""
        self._abandoned.add(future)

        def forget(done: asyncio.Future[Any]) -> None:
            self._abandoned.discard(done)
            if not done.cancelled():
                done.exception()

        future.add_done_callback(forget)

    async def _enabled(self, name: str, uid: str) -> bool:
        if self._is_enabled is None:
            return True
        info = self.info(name)
        if info is not None and info.always_on:
            return True
        try:
            return await self._is_enabled(name, uid)
        except Exception:
            log.exception("could not tell whether %s is enabled for %s; not calling it", name, uid)
            return False

    def _info_map(self) -> dict[str, PluginInfo]:
        """Each plugin's ``plugin_info()``, asked again only when the set of plugins changes."""
        listed = self.pm.list_name_plugin()
        plugins = tuple((name, id(plugin)) for name, plugin in listed if plugin is not None)
        if plugins == self._infos_for:
            return self._infos
        infos: dict[str, PluginInfo] = {}
        for impl in self.pm.hook.plugin_info.get_hookimpls():
            name = self._name(impl)
            try:
                info = impl.function()
            except Exception as exc:
                self._fail(name, "plugin_info", exc)
                continue
            if isinstance(info, PluginInfo) and info.id in ("", name):
                infos[name] = msgspec.structs.replace(info, id=name)
            elif isinstance(info, PluginInfo):
                self._record(name, "plugin_info", f"id {info.id!r} is not the plugin's name {name!r}")
                infos[name] = msgspec.structs.replace(info, id=name)
            elif info is not None:
                if inspect.iscoroutine(info):
                    info.close()
                self._record(name, "plugin_info", f"returned {type(info).__name__}, not PluginInfo")
        order = {name: index for index, (name, _) in enumerate(plugins)}
        self._infos = dict(sorted(infos.items(), key=lambda item: order.get(item[0], len(order))))
        self._infos_for = plugins
        return self._infos

    def _fail(self, name: str, hook: str, exc: BaseException) -> None:
        log.error("plugin %s failed in %s", name, hook, exc_info=exc)
        detail = "".join(traceback.format_exception(exc))[-_DETAIL_CHARS:]
        self._record(name, hook, f"{type(exc).__name__}: {exc}", detail)

    def _record(self, name: str, hook: str, message: str, detail: str = "") -> None:
        errors = self._errors.setdefault(name, deque(maxlen=self._max_errors))
        errors.append(PluginError(at=self._clock(), hook=hook, message=message, detail=detail))
        self._error_counts[name] = self._error_counts.get(name, 0) + 1


def _successes(outcomes: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The (name, result) of the implementations that ran and returned."""
    return [(name, result) for name, result in outcomes if result is not _NO_RESULT and result is not _FAILED]

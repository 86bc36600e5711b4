"""Build the plugin manager: the hook specifications, the built-ins, then the entry points.

Entry points are loaded one at a time, so a broken plugin package is recorded and skipped
instead of stopping the server (pluggy's own ``load_setuptools_entrypoints`` aborts on the
first one). There is no global plugin manager: each app builds its own.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import types
from collections.abc import Callable, Collection, Iterable, Sequence
from importlib.metadata import EntryPoint
from typing import NamedTuple

import msgspec
import pluggy

from app.plugins import hookspecs
from app.plugins.markers import PROJECT

__all__ = [
    "BUILTINS",
    "PluginFailure",
    "PluginLoad",
    "build_plugin_manager",
    "new_plugin_manager",
    "plugin_name",
    "register_plugin",
]

log = logging.getLogger("omi_backend.plugins")

BUILTINS: tuple[types.ModuleType, ...] = ()
"""Plugin modules registered before any entry point.

Empty: the plugins shipped with the server are registered through the project's own
``[project.entry-points.omi_backend]`` table, the path every third-party plugin takes.
"""


class PluginFailure(NamedTuple):
    """A plugin that could not be loaded: ``name, error = failure`` unpacks it.

    Attributes:
        name: The plugin's name (its entry-point name, or its module name for a built-in).
        error: What went wrong, as ``ExceptionType: message``.
    """

    name: str
    error: str


class PluginLoad(msgspec.Struct, frozen=True, kw_only=True):
    """The result of :func:`build_plugin_manager`.

    Attributes:
        pm: The plugin manager, with every plugin that loaded registered.
        loaded: Names of the registered plugins, built-ins first, in load order.
        failures: The plugins that failed to import or register, in load order.
    """

    pm: pluggy.PluginManager
    loaded: list[str]
    failures: list[PluginFailure]


def new_plugin_manager() -> pluggy.PluginManager:
    """A new plugin manager with the hook specifications and no plugins."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def plugin_name(plugin: object) -> str:
    """The default name of a plugin object: a module's or class's ``__name__``, else its type's."""
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) and name else type(plugin).__name__


def register_plugin(pm: pluggy.PluginManager, plugin: object, name: str | None = None) -> str | None:
    """Register ``plugin`` and check it against the hook specifications.

    A plugin that implements an unknown hook, or a hook wrapper (the host calls each
    implementation on its own, so it has nothing to wrap), is unregistered again, leaving
    ``pm`` as it was.

    Args:
        pm: The plugin manager, whose plugins so far all passed this check.
        plugin: A module, class or object with ``@hookimpl`` functions.
        name: The name to register it under; by default :func:`plugin_name`.

    Returns:
        The name it is registered under, or ``None`` when that name is blocked.

    Raises:
        ValueError: The name or the plugin is already registered.
        pluggy.PluginValidationError: A hook implementation does not fit its specification.
    """
    registered = pm.register(plugin, name or plugin_name(plugin))
    if registered is None:
        return None
    try:
        # Every plugin registered before this one passed, so a pending hook is this one's.
        pm.check_pending()
        for caller in pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    raise pluggy.PluginValidationError(
                        plugin, f"hook wrappers are not supported: {caller.name!r} in {registered!r}"
                    )
    except BaseException:
        pm.unregister(plugin)
        raise
    return registered


def build_plugin_manager(
    builtins: Sequence[object] = BUILTINS,
    entry_points: Iterable[EntryPoint] | None = None,
    blocked: Collection[str] = (),
) -> PluginLoad:
    """Build a plugin manager and load every plugin into it, each on its own.

    The built-ins are registered first, then each entry point: one whose name is in
    ``blocked`` is skipped before it is imported; one that fails to import or to register
    (a bad signature, an unknown hook, a taken name) is recorded in the failures and the
    rest still load.

    Args:
        builtins: Plugin objects registered first, under :func:`plugin_name`.
        entry_points: The plugins to load; by default the installed entry points of the
            ``omi_backend`` group.
        blocked: Plugin names not to load.

    Returns:
        The manager with the loaded plugins' names and the failures.
    """
    pm = new_plugin_manager()
    for name in blocked:
        pm.set_blocked(name)
    load = PluginLoad(pm=pm, loaded=[], failures=[])
    for builtin in builtins:
        _add(load, plugin_name(builtin), functools.partial(_identity, builtin))
    found = importlib.metadata.entry_points(group=PROJECT) if entry_points is None else entry_points
    for ep in found:
        if pm.is_blocked(ep.name):
            log.info("plugin %s is blocked: not loaded", ep.name)
        elif pm.has_plugin(ep.name):
            error = f"a plugin named {ep.name!r} is already loaded"
            load.failures.append(PluginFailure(name=ep.name, error=error))
        else:
            _add(load, ep.name, functools.partial(_instantiate, ep))
    pm.check_pending()
    return load


def _instantiate(ep: EntryPoint) -> object:
    """Load an entry point; a class is instantiated, so each app gets plugin state of its own."""
    plugin = ep.load()
    return plugin() if isinstance(plugin, type) else plugin


def _identity(plugin: object) -> object:
    return plugin


def _add(load: PluginLoad, name: str, importer: Callable[[], object]) -> None:
    """Import and register one plugin, recording a failure instead of raising."""
    if load.pm.is_blocked(name):
        return
    try:
        registered = register_plugin(load.pm, importer(), name)
    except Exception as exc:
        log.exception("plugin %s failed to load", name)
        load.failures.append(PluginFailure(name=name, error=f"{type(exc).__name__}: {exc}"))
        return
    if registered is not None:
        load.loaded.append(registered)
        log.info("plugin %s loaded", registered)

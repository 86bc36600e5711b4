"""What ``omi-backend plugins list`` shows: every plugin, its version, hooks and load status."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Collection, Iterable, Sequence
from importlib.metadata import EntryPoint
from typing import Literal

import msgspec

from app.plugins.manager import BUILTINS, build_plugin_manager, plugin_name
from app.plugins.markers import PROJECT

__all__ = ["PluginRow", "format_rows", "inventory"]

Status = Literal["loaded", "failed", "blocked"]


class PluginRow(msgspec.Struct, frozen=True, kw_only=True):
    """One plugin as the server would load it.

    Attributes:
        name: Its name (the entry-point name; a built-in's module or class name).
        version: The version of the distribution that declares its entry point ("" if unknown).
        distribution: That distribution's name ("" for a built-in).
        status: ``loaded``, ``failed`` (it would not load) or ``blocked`` (``OMI_PLUGINS_BLOCKED``).
        error: Why it failed, for a failed plugin.
        hooks: The hooks it implements, for a loaded plugin.
    """

    name: str
    version: str
    distribution: str
    status: Status
    error: str = ""
    hooks: list[str] = msgspec.field(default_factory=list)


def _server_version() -> str:
    try:
        return importlib.metadata.version("omi-backend")
    except importlib.metadata.PackageNotFoundError:
        return ""


def inventory(
    blocked: Collection[str] = (),
    entry_points: Iterable[EntryPoint] | None = None,
    builtins: Sequence[object] = BUILTINS,
) -> list[PluginRow]:
    """Load the plugins as the server does (each on its own) and report on each.

    Args:
        blocked: Plugin names not to load.
        entry_points: The plugins' entry points; by default the installed ``omi_backend`` group.
        builtins: Plugin objects registered before the entry points.
    """
    found = list(importlib.metadata.entry_points(group=PROJECT) if entry_points is None else entry_points)
    load = build_plugin_manager(builtins, entry_points=found, blocked=blocked)
    failures: dict[str, list[str]] = {}
    for failure in load.failures:
        failures.setdefault(failure.name, []).append(failure.error)
    rows: list[PluginRow] = []
    reported: set[str] = set()

    def row(name: str, version: str, distribution: str) -> PluginRow:
        if name in blocked:
            return PluginRow(name=name, version=version, distribution=distribution, status="blocked")
        plugin = load.pm.get_plugin(name)
        if name in reported or plugin is None:  # a second plugin of the same name never loads
            errors = failures.get(name) or ["not loaded"]
            error = errors.pop(0) if len(errors) > 1 else errors[0]
            return PluginRow(
                name=name, version=version, distribution=distribution, status="failed", error=error
            )
        hooks = sorted(caller.name for caller in load.pm.get_hookcallers(plugin) or ())
        return PluginRow(name=name, version=version, distribution=distribution, status="loaded", hooks=hooks)

    for builtin in builtins:
        name = plugin_name(builtin)
        rows.append(row(name, _server_version(), ""))
        reported.add(name)
    for ep in found:
        dist = ep.dist
        rows.append(row(ep.name, dist.version if dist else "", dist.metadata["Name"] if dist else ""))
        reported.add(ep.name)
    return rows


def format_rows(rows: Sequence[PluginRow]) -> str:
    """A plain-text table: plugin, version, status, then its hooks (or why it failed)."""
    table = [("PLUGIN", "VERSION", "STATUS", "HOOKS / ERROR")]
    for r in rows:
        detail = ", ".join(r.hooks) if r.status == "loaded" else r.error or "OMI_PLUGINS_BLOCKED"
        table.append((r.name, r.version or "-", r.status, detail))
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True)), line[3]])
        for line in table
    )

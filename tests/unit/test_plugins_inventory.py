"""``omi-backend plugins list``: each plugin, its version, hooks and status; blocked plugins."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from app.cli import main
from app.config import Settings
from app.main import create_app
from app.plugins import PROJECT, hookimpl
from app.plugins.inventory import PluginRow, format_rows, inventory

SAMPLES = "tests.unit.plugin_samples"


def entry_point(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{SAMPLES}.{module}", group=PROJECT)


class Builtin:
    @hookimpl
    def on_shutdown(self) -> None:
        """Nothing to stop."""


def test_each_plugin_with_its_status_and_hooks() -> None:
    eps = [
        entry_point("good", "good"),
        entry_point("broken", "broken"),
        entry_point("blocked", "blocked"),
        entry_point("good", "also_good"),
    ]
    rows = inventory(blocked={"blocked"}, entry_points=eps, builtins=[Builtin()])
    assert [(r.name, r.status) for r in rows] == [
        ("Builtin", "loaded"),
        ("good", "loaded"),
        ("broken", "failed"),
        ("blocked", "blocked"),
        ("good", "failed"),
    ]
    assert rows[0].hooks == ["on_shutdown"]
    assert rows[1].hooks == ["on_memory_created", "on_transcript", "plugin_info"]
    assert rows[2].error == "RuntimeError: broken plugin cannot be imported"
    assert rows[4].error == "a plugin named 'good' is already loaded"


def test_the_version_is_the_distributions() -> None:
    [row] = [r for r in inventory() if r.name == "prompt_plugins"]
    assert (row.distribution, row.status) == ("omi-backend", "loaded")
    assert row.version
    assert "on_memory_processing" in row.hooks


def test_the_table_shows_hooks_errors_and_blocks() -> None:
    rows = [
        PluginRow(name="a", version="1.0", distribution="pkg", status="loaded", hooks=["x", "y"]),
        PluginRow(name="long-name", version="", distribution="", status="failed", error="Boom: no"),
        PluginRow(name="c", version="2", distribution="pkg", status="blocked"),
    ]
    lines = format_rows(rows).splitlines()
    assert lines[0].split() == ["PLUGIN", "VERSION", "STATUS", "HOOKS", "/", "ERROR"]
    assert lines[1].split() == ["a", "1.0", "loaded", "x,", "y"]
    assert lines[2].split() == ["long-name", "-", "failed", "Boom:", "no"]
    assert lines[3].split() == ["c", "2", "blocked", "OMI_PLUGINS_BLOCKED"]
    column = lines[0].index("STATUS")
    assert [line[column:].split()[0] for line in lines] == ["STATUS", "loaded", "failed", "blocked"]


def test_the_command_prints_the_table_or_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("OMI_PLUGINS_BLOCKED", "prompt_plugins, nothing")
    assert main(["plugins", "list"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("PLUGIN")
    assert any(
        line.split()[:3] == ["prompt_plugins", line.split()[1], "blocked"] for line in table.splitlines()
    )
    assert main(["plugins", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["prompt_plugins"]["status"] == "blocked"


def test_the_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["plugins", "list", "--help"])
    assert exit_.value.code == 0
    assert "blocked" in capsys.readouterr().out


def test_the_blocked_setting_reaches_the_app(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"OMI_PLUGINS_BLOCKED": " prompt_plugins ,,hello", "OMI_DATA_DIR": str(tmp_path)}, None
    )
    assert settings.blocked_plugins == {"prompt_plugins", "hello"}
    app = create_app(settings)
    load = app.state.plugin_load
    assert "prompt_plugins" not in load.loaded
    assert "hello" not in load.loaded
    assert not load.pm.has_plugin("prompt_plugins")

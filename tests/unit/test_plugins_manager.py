"""build_plugin_manager: built-ins, then entry points one at a time, failures recorded."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pluggy
import pytest

from app.plugins import PROJECT, hookimpl
from app.plugins.manager import BUILTINS, build_plugin_manager, new_plugin_manager, register_plugin

SAMPLES = "tests.unit.plugin_samples"


def entry_point(name: str, module: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{SAMPLES}.{module}", group=PROJECT)


def builtin_module() -> types.ModuleType:
    module = types.ModuleType("builtin_sample")

    @hookimpl
    def plugin_info() -> None:
        return None

    module.plugin_info = plugin_info  # type: ignore[attr-defined]
    return module


def test_one_name_everywhere() -> None:
    assert PROJECT == "omi_backend"
    assert hookimpl.project_name == PROJECT
    assert BUILTINS == ()


def test_builtins_are_registered_before_entry_points() -> None:
    builtin = builtin_module()
    load = build_plugin_manager([builtin], entry_points=[entry_point("good", "good")])
    assert load.loaded == ["builtin_sample", "good"]
    assert load.failures == []
    assert load.pm.get_plugin("builtin_sample") is builtin
    assert load.pm.get_plugin("good") is sys.modules[f"{SAMPLES}.good"]


def test_default_entry_points_are_the_installed_group(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return [entry_point("good", "good")]

    monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
    load = build_plugin_manager(())
    assert asked == ["omi_backend"]
    assert load.loaded == ["good"]


def test_a_plugin_that_fails_to_import_is_recorded_and_the_others_load() -> None:
    eps = [entry_point("broken", "broken"), entry_point("good", "good"), entry_point("also", "also_good")]
    load = build_plugin_manager((), entry_points=eps)
    assert load.loaded == ["good", "also"]
    assert [f.name for f in load.failures] == ["broken"]
    assert load.failures[0].error == "RuntimeError: broken plugin cannot be imported"
    assert not load.pm.has_plugin("broken")


def test_an_unknown_hook_is_that_plugins_failure_not_a_crash() -> None:
    eps = [entry_point("unknown", "unknown_hook"), entry_point("good", "good")]
    load = build_plugin_manager((), entry_points=eps)
    assert load.loaded == ["good"]
    assert [f.name for f in load.failures] == ["unknown"]
    assert "unknown hook 'on_something_else'" in load.failures[0].error
    assert not load.pm.has_plugin("unknown")
    load.pm.check_pending()  # the manager is left clean


@pytest.mark.parametrize(
    ("module", "message"),
    [("bad_signature", "mood"), ("wrapper", "hook wrappers are not supported")],
)
def test_an_invalid_hook_is_recorded(module: str, message: str) -> None:
    load = build_plugin_manager((), entry_points=[entry_point("bad", module), entry_point("good", "good")])
    assert load.loaded == ["good"]
    assert [f.name for f in load.failures] == ["bad"]
    assert "PluginValidationError" in load.failures[0].error
    assert message in load.failures[0].error
    assert load.pm.hook.on_memory_created.get_hookimpls()[0].plugin_name == "good"


def test_blocked_names_are_not_even_imported() -> None:
    eps = [entry_point("blocked", "blocked"), entry_point("good", "good")]
    load = build_plugin_manager((), entry_points=eps, blocked={"blocked"})
    assert load.loaded == ["good"]
    assert load.failures == []
    assert f"{SAMPLES}.blocked" not in sys.modules


def test_a_blocked_builtin_is_not_registered() -> None:
    load = build_plugin_manager([builtin_module()], entry_points=[], blocked=["builtin_sample"])
    assert load.loaded == []
    assert load.failures == []


def test_a_name_taken_twice_is_recorded() -> None:
    eps = [entry_point("good", "good"), entry_point("good", "also_good")]
    load = build_plugin_manager((), entry_points=eps)
    assert load.loaded == ["good"]
    assert [(f.name, f.error) for f in load.failures] == [("good", "a plugin named 'good' is already loaded")]


def test_each_build_has_its_own_manager() -> None:
    first = build_plugin_manager((), entry_points=[entry_point("good", "good")])
    second = build_plugin_manager((), entry_points=[])
    assert first.pm is not second.pm
    assert second.pm.hook.on_transcript.get_hookimpls() == []


def test_register_plugin_leaves_the_manager_unchanged_on_failure() -> None:
    class Unknown:
        @hookimpl
        def on_nothing(self) -> None:
            """Not a hook."""

    pm = new_plugin_manager()
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'on_nothing'"):
        register_plugin(pm, Unknown())
    assert pm.get_plugins() == set()
    pm.check_pending()

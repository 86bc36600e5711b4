"""docs/plugins.md has one section per hook, headed by the hook's exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from app.plugins import PROJECT, hookspecs

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HEADING = re.compile(r"^## (\w+\(.*\))\s*$", re.MULTILINE)


def hook_signatures() -> dict[str, str]:
    """Each hook specification's name and its signature as the guide's heading spells it."""
    specs = {
        name: function
        for name, function in vars(hookspecs).items()
        if inspect.isfunction(function) and hasattr(function, f"{PROJECT}_spec")
    }
    return {name: f"{name}({', '.join(inspect.signature(f).parameters)})" for name, f in specs.items()}


def documented() -> list[str]:
    return HEADING.findall(GUIDE.read_text(encoding="utf-8"))


def test_there_are_hooks_to_document() -> None:
    assert {"on_transcript", "on_memory_created", "plugin_info"} <= set(hook_signatures())
    assert set(hook_signatures()) == set(hookspecs.__all__)


@pytest.mark.parametrize("signature", sorted(hook_signatures().values()))
def test_every_hook_has_a_section_headed_by_its_signature(signature: str) -> None:
    assert signature in documented(), f"docs/plugins.md has no section '## {signature}'"


def test_every_documented_hook_exists() -> None:
    assert sorted(documented()) == sorted(hook_signatures().values())

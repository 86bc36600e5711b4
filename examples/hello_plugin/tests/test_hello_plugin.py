"""Tests written with the fixtures omi-backend ships to plugin authors (its pytest11 plugin)."""

from __future__ import annotations

import pytest
from hello_plugin import HelloPlugin

from app.core.models import Memory
from app.testing import PluginHostFactory

pytestmark = pytest.mark.anyio


def test_it_is_in_the_catalogue(make_plugin_host: PluginHostFactory) -> None:
    host = make_plugin_host(HelloPlugin())
    [info] = host.plugin_infos()
    assert info.name == "Hello"
    assert info.capabilities == ("memories",)
    assert not info.always_on


async def test_it_says_hello_about_the_memory(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    host = make_plugin_host(HelloPlugin())
    [message] = await host.on_memory_created("uid-1", sample_memory)
    assert sample_memory.structured.title in message.text
    assert message.memories_id == [sample_memory.id]
    assert message.plugin_id == "HelloPlugin"  # the name it is registered under here
    assert host.errors("HelloPlugin") == []


async def test_it_runs_only_for_users_who_enabled_it(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    async def only_alice(plugin_id: str, uid: str) -> bool:
        return uid == "alice"

    host = make_plugin_host(HelloPlugin(), is_enabled=only_alice)
    assert len(await host.on_memory_created("alice", sample_memory)) == 1
    assert await host.on_memory_created("bob", sample_memory) == []

"""A plugin whose ``on_memory_created`` fails is called again, alone, until it succeeds or is
given up; the plugins that succeeded are not called twice.

A real pipeline on the embedded stores and a real plugin host, with a clock the test moves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from app.core.models import CreateMemory, Memory, Message, TranscriptSegment
from app.core.pipeline import MAX_HOOK_TRIES, PENDING_HOOKS_KEY, MemoryPipeline
from app.core.services import Services
from app.plugins import hookimpl
from app.plugins.host import PluginHost
from app.plugins.manager import new_plugin_manager, register_plugin
from tests.web.conftest import web_services

pytestmark = pytest.mark.anyio

UID = "alice:work"  # a uid with a colon, as the owed entries must split it right


class Plugin:
    """Records its calls; raises for its first ``failures`` calls, then answers a message."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[str] = []

    @hookimpl
    async def on_memory_created(self, uid: str, memory: Memory) -> list[Message]:
        self.calls.append(memory.id)
        if len(self.calls) <= self.failures:
            raise ConnectionError("the queue is out of reach")
        return [
            Message(id=f"{type(self).__name__}-{len(self.calls)}", text="done", created_at=memory.created_at)
        ]


class Steady(Plugin):
    pass


class Flaky(Plugin):
    pass


class Broken(Plugin):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def services(tmp_path: Path, embedder: MiniLMEmbedder) -> AsyncIterator[Services]:
    services = web_services(tmp_path, embedder)  # the embedded stores; no live session here
    yield services
    await services.close()


@dataclass
class World:
    """A pipeline with the three plugins, on a clock the test moves."""

    pipeline: MemoryPipeline
    clock: Clock
    steady: Steady
    flaky: Flaky
    broken: Broken


@pytest.fixture
def world(services: Services) -> Iterator[World]:
    steady, flaky, broken = Steady(), Flaky(failures=2), Broken(failures=10**6)
    pm = new_plugin_manager()
    for plugin in (steady, flaky, broken):
        register_plugin(pm, plugin)
    host = PluginHost(pm, timeout=5.0)
    clock = Clock()
    yield World(MemoryPipeline(services, host, clock=clock), clock, steady, flaky, broken)
    host.close()


def request() -> CreateMemory:
    started = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    segments = [
        TranscriptSegment(text="Remind me to call the plumber about the leak tomorrow.", start=0, end=4)
    ]
    return CreateMemory(
        started_at=started, finished_at=started + timedelta(minutes=1), transcript_segments=segments
    )


async def owed(services: Services) -> dict[str, Any]:
    return {
        entry: msgspec.json.decode(value)
        for entry, value in (await services.kv.hgetall(PENDING_HOOKS_KEY)).items()
    }


async def test_failed_plugins_are_called_again_alone_with_back_off_and_given_up_in_the_end(
    services: Services, world: World
) -> None:
    pipeline, clock = world.pipeline, world.clock

    memory, messages = await pipeline.create(UID, request())
    assert [m.id for m in messages] == ["Steady-1"]  # the request succeeds with what succeeded
    entry = f"{UID}:{memory.id}"
    retry = (await owed(services))[entry]
    assert (sorted(retry["plugins"]), retry["tries"]) == (["Broken", "Flaky"], 1)

    # not before the back-off (60 s, doubling)
    assert await pipeline.announce_pending() == 0
    clock.advance(59)
    assert await pipeline.announce_pending() == 0
    clock.advance(1)
    assert await pipeline.announce_pending() == 1  # Flaky's second failure
    clock.advance(119)
    assert await pipeline.announce_pending() == 0
    clock.advance(1)
    assert await pipeline.announce_pending() == 1  # Flaky succeeds
    assert (world.steady.calls, world.flaky.calls) == ([memory.id], [memory.id] * 3)
    assert (await owed(services))[entry] == {
        "at": msgspec.json.decode(msgspec.json.encode(clock.now)),
        "plugins": ["Broken"],
        "tries": 3,
    }

    for _ in range(MAX_HOOK_TRIES):  # Broken, until it is given up (an hour apart at most)
        clock.advance(3600)
        await pipeline.announce_pending()
    assert await owed(services) == {}
    assert len(world.broken.calls) == MAX_HOOK_TRIES
    # never called again once they succeeded
    assert (len(world.steady.calls), len(world.flaky.calls)) == (1, 3)
    stored = sorted(m.id for m in await services.store.list_messages(UID))
    assert stored == ["Flaky-3", "Steady-1"]
    assert (await services.store.get(UID, memory.id)) is not None


async def test_an_entry_owed_by_a_crash_calls_every_plugin_and_then_only_those_that_failed(
    services: Services, world: World
) -> None:
    pipeline, clock = world.pipeline, world.clock
    memory, _ = await pipeline.create(UID, request(), trigger_integrations=False)
    # as a crash between the store write and the plugins leaves it: a plain time
    await services.kv.hset(PENDING_HOOKS_KEY, f"{UID}:{memory.id}", msgspec.json.encode(clock.now).decode())
    assert await pipeline.announce_pending() == 1
    assert (len(world.steady.calls), len(world.flaky.calls), len(world.broken.calls)) == (1, 1, 1)
    clock.advance(60)
    assert await pipeline.announce_pending() == 1
    assert (len(world.steady.calls), len(world.flaky.calls), len(world.broken.calls)) == (1, 2, 2)
    # an entry that does not parse counts as owed long ago and calls everyone
    await services.kv.hset(PENDING_HOOKS_KEY, f"{UID}:{memory.id}", "not json")
    assert await pipeline.announce_pending() == 1
    assert (len(world.steady.calls), len(world.flaky.calls), len(world.broken.calls)) == (2, 3, 3)

"""PluginHost: each plugin on its own, with a timeout, a per-user filter and a status record."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime

import anyio
import pytest

from app import testing
from app.core.models import Memory, Message, TranscriptSegment
from app.plugins import PluginInfo, TranscriptSession, hookimpl
from app.plugins.host import PluginHost
from app.plugins.manager import new_plugin_manager, register_plugin
from app.testing import PluginHostFactory

pytestmark = pytest.mark.anyio

# The fixtures shipped to plugin authors. The pytest11 entry point loads them only where
# the project is installed, so they are brought in here by hand as well.
make_plugin_host = testing.make_plugin_host
sample_memory = testing.sample_memory

SESSION_A = TranscriptSession(id="s1", uid="A")
SEGMENTS = [TranscriptSegment(text="hello there", start=0.0, end=1.0)]


def message(id: str, memory: Memory, plugin_id: str | None = None) -> Message:
    return Message(id=id, text="hi", created_at=memory.created_at, plugin_id=plugin_id)


class Good:
    @hookimpl
    def on_memory_created(self, memory: Memory) -> list[Message]:
        return [message("good", memory)]


class AsyncGood:
    @hookimpl
    async def on_memory_created(self, uid: str, memory: Memory) -> list[Message]:
        await asyncio.sleep(0)
        return [message(f"async-{uid}", memory, plugin_id="custom")]


class Raising:
    @hookimpl
    def on_memory_created(self, memory: Memory) -> list[Message]:
        raise ValueError("cannot handle " + memory.id)


class Hanging:
    @hookimpl
    async def on_memory_created(self) -> None:
        await asyncio.sleep(60)


class Stubborn:
    """Swallows its cancellation and goes on: the host must not wait for it."""

    @hookimpl
    async def on_memory_created(self) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(30)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    async def on_transcript(self, session: TranscriptSession) -> None:
        self.calls.append(session.uid)


class AlwaysOn(Recorder):
    @hookimpl
    def plugin_info(self) -> PluginInfo:
        return PluginInfo(name="Always", always_on=True)


async def test_failures_are_recorded_while_a_good_plugin_delivers(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    host = make_plugin_host(Raising(), Hanging(), Good(), timeout=0.2)
    messages = await host.on_memory_created("A", sample_memory)
    assert [(m.id, m.plugin_id) for m in messages] == [("good", "Good")]

    [raised] = host.errors("Raising")
    assert raised.hook == "on_memory_created"
    assert raised.message == f"ValueError: cannot handle {sample_memory.id}"
    assert "Traceback" in raised.detail
    [timed_out] = host.errors("Hanging")
    assert timed_out.message == "timed out after 0.2 s"
    assert host.errors("Good") == []
    status = {s.name: (s.registered, s.error_count) for s in host.status()}
    assert status == {"Raising": (True, 1), "Hanging": (True, 1), "Good": (True, 0)}


async def test_announce_names_the_plugins_that_failed_and_can_call_only_those(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    host = make_plugin_host(Raising(), Hanging(), Good(), AsyncGood(), timeout=0.2)
    announced = await host.announce("A", sample_memory)
    assert sorted(announced.failed) == ["Hanging", "Raising"]
    assert sorted(m.id for m in announced.messages) == ["async-A", "good"]
    again = await host.announce("A", sample_memory, only=["Raising", "AsyncGood"])
    assert again.failed == ["Raising"]
    assert [m.id for m in again.messages] == ["async-A"]
    assert len(host.errors("Hanging")) == 1  # not called the second time
    nothing = await host.announce("A", sample_memory, only=[])
    assert (nothing.messages, nothing.failed) == ([], [])


async def test_a_plugin_that_swallows_cancellation_does_not_stall_the_dispatch(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    host = make_plugin_host(Stubborn(), timeout=0.05)
    # The plugin goes on for 30 s after its cancellation; a host that waited would hang here.
    with anyio.fail_after(10):
        assert await host.on_memory_created("A", sample_memory) == []
    assert host.errors("Stubborn")[0].message == "timed out after 0.05 s"


async def test_errors_are_logged(
    make_plugin_host: PluginHostFactory, sample_memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    host = make_plugin_host(Raising())
    await host.on_memory_created("A", sample_memory)
    [record] = [r for r in caplog.records if r.name == "omi_backend.plugins"]
    assert record.levelname == "ERROR"
    assert "Raising" in record.getMessage()


async def test_the_error_record_is_bounded(sample_memory: Memory) -> None:
    pm = new_plugin_manager()
    register_plugin(pm, Raising())
    host = PluginHost(pm, timeout=1.0, is_enabled=None, max_errors=3, clock=lambda: datetime(2024, 1, 1))
    try:
        for _ in range(5):
            await host.on_memory_created("A", sample_memory)
    finally:
        host.close()
    assert len(host.errors("Raising")) == 3
    [status] = host.status()
    assert status.error_count == 5
    assert status.errors[0].at == datetime(2024, 1, 1)


async def test_a_slow_sync_plugin_does_not_block_the_event_loop(make_plugin_host: PluginHostFactory) -> None:
    class SlowSync:
        thread: str = ""

        @hookimpl
        def on_transcript(self) -> None:
            SlowSync.thread = threading.current_thread().name
            time.sleep(0.3)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    host = make_plugin_host(SlowSync())
    task = asyncio.create_task(ticker())
    try:
        await host.on_transcript(SESSION_A, SEGMENTS)
    finally:
        task.cancel()
    assert ticks >= 5, "the event loop was blocked while the sync plugin ran"
    assert SlowSync.thread.startswith("omi-plugin")


async def test_only_the_declared_parameters_are_passed(make_plugin_host: PluginHostFactory) -> None:
    received: list[object] = []

    class OnlySegments:
        @hookimpl
        def on_transcript(self, segments: list[TranscriptSegment]) -> None:
            received.append(segments)

    await make_plugin_host(OnlySegments()).on_transcript(SESSION_A, SEGMENTS)
    assert received == [SEGMENTS]


async def test_a_plugin_runs_only_for_users_who_enabled_it(make_plugin_host: PluginHostFactory) -> None:
    asked: list[tuple[str, str]] = []

    async def is_enabled(plugin: str, uid: str) -> bool:
        asked.append((plugin, uid))
        return uid == "B"

    recorder = Recorder()
    host = make_plugin_host(recorder, is_enabled=is_enabled)
    await host.on_transcript(SESSION_A, SEGMENTS)
    await host.on_transcript(TranscriptSession(id="s2", uid="B"), SEGMENTS)
    assert recorder.calls == ["B"]
    assert asked == [("Recorder", "A"), ("Recorder", "B")]


async def test_always_on_plugins_run_without_being_enabled(make_plugin_host: PluginHostFactory) -> None:
    asked: list[str] = []

    async def nobody(plugin: str, uid: str) -> bool:
        asked.append(plugin)
        return False

    always, recorder = AlwaysOn(), Recorder()
    host = make_plugin_host(always, recorder, is_enabled=nobody)
    await host.on_transcript(SESSION_A, SEGMENTS)
    assert always.calls == ["A"]
    assert recorder.calls == []
    assert asked == ["Recorder"]


async def test_without_a_filter_every_plugin_runs(make_plugin_host: PluginHostFactory) -> None:
    recorder = Recorder()
    await make_plugin_host(recorder, is_enabled=None).on_transcript(SESSION_A, SEGMENTS)
    assert recorder.calls == ["A"]


async def test_a_failing_filter_skips_the_plugin(make_plugin_host: PluginHostFactory) -> None:
    async def broken(plugin: str, uid: str) -> bool:
        raise OSError("store is down")

    recorder = Recorder()
    await make_plugin_host(recorder, is_enabled=broken).on_transcript(SESSION_A, SEGMENTS)
    assert recorder.calls == []


async def test_messages_are_collected_from_several_plugins(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    class Nothing:
        @hookimpl
        def on_memory_created(self) -> None:
            return None

    host = make_plugin_host(Good(), Nothing(), AsyncGood())
    messages = await host.on_memory_created("A", sample_memory)
    # pluggy's call order: the last registered plugin first
    assert [(m.id, m.plugin_id) for m in messages] == [("async-A", "custom"), ("good", "Good")]


async def test_a_wrong_return_value_is_recorded(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    class Wrong:
        @hookimpl
        def on_memory_created(self) -> str:
            return "not messages"

    host = make_plugin_host(Wrong(), Good())
    assert [m.id for m in await host.on_memory_created("A", sample_memory)] == ["good"]
    assert host.errors("Wrong")[0].message == "returned str, not list[Message]"


async def test_cancelling_the_caller_propagates(make_plugin_host: PluginHostFactory) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Waiting:
        @hookimpl
        async def on_transcript(self) -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    host = make_plugin_host(Waiting(), timeout=30)
    task = asyncio.create_task(host.on_transcript(SESSION_A, SEGMENTS))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 1)
    assert host.errors("Waiting") == []


async def test_a_plugin_that_cancels_itself_is_only_a_failure(make_plugin_host: PluginHostFactory) -> None:
    class SelfCancelling:
        @hookimpl
        async def on_transcript(self) -> None:
            raise asyncio.CancelledError

    recorder = Recorder()
    host = make_plugin_host(SelfCancelling(), recorder)
    await host.on_transcript(SESSION_A, SEGMENTS)
    assert recorder.calls == ["A"]
    assert host.errors("SelfCancelling")[0].message.startswith("CancelledError")


async def test_a_sync_plugin_may_return_an_awaitable(
    make_plugin_host: PluginHostFactory, sample_memory: Memory
) -> None:
    async def later(memory: Memory) -> list[Message]:
        return [message("later", memory)]

    class ReturnsAwaitable:
        @hookimpl
        def on_memory_created(self, memory: Memory) -> object:
            return later(memory)

    messages = await make_plugin_host(ReturnsAwaitable()).on_memory_created("A", sample_memory)
    assert [m.id for m in messages] == ["later"]


def test_plugin_infos_are_the_catalogue_entries(make_plugin_host: PluginHostFactory) -> None:
    class Described:
        @hookimpl
        def plugin_info(self) -> PluginInfo:
            return PluginInfo(name="Described", author="Me", capabilities=("memories",))

    class Misnamed:
        @hookimpl
        def plugin_info(self) -> PluginInfo:
            return PluginInfo(id="other", name="Misnamed")

    class Bad:
        @hookimpl
        def plugin_info(self) -> str:
            return "nope"

    host = make_plugin_host(Described(), Misnamed(), Bad(), Good())
    infos = host.plugin_infos()
    assert [(i.id, i.name) for i in infos] == [("Described", "Described"), ("Misnamed", "Misnamed")]
    assert host.info("Described") == PluginInfo(
        id="Described", name="Described", author="Me", capabilities=("memories",)
    )
    assert host.info("Good") is None
    assert host.errors("Misnamed")[0].message == "id 'other' is not the plugin's name 'Misnamed'"
    assert host.errors("Bad")[0].message == "returned str, not PluginInfo"


def test_load_failures_show_in_the_status(make_plugin_host: PluginHostFactory) -> None:
    host = make_plugin_host(Good())
    host.record_failure("broken", "load", "RuntimeError: boom")
    status = {s.name: s for s in host.status()}
    assert status["broken"].registered is False
    assert status["broken"].errors[0].hook == "load"
    assert status["Good"].registered is True


async def test_sample_memory_is_a_realistic_stored_memory(sample_memory: Memory) -> None:
    assert sample_memory.structured.title
    assert sample_memory.structured.action_items
    assert len(sample_memory.transcript_segments) >= 2
    assert sample_memory.started_at <= sample_memory.finished_at <= sample_memory.created_at
    assert not sample_memory.discarded

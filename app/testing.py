"""pytest fixtures for plugin authors, published through the ``pytest11`` entry point.

With ``omi-backend`` installed, a plugin's tests can ask for these fixtures by name::

    async def test_greets(make_plugin_host, sample_memory):
        host = make_plugin_host(my_plugin)
        messages = await host.on_memory_created("uid-1", sample_memory)

Importing this module has no side effects.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Protocol

import pytest

from app.core.models import ActionItem, Event, Geolocation, Memory, Structured, TranscriptSegment
from app.plugins.host import EnabledCheck, PluginHost
from app.plugins.manager import new_plugin_manager, register_plugin

__all__ = ["PluginHostFactory", "make_plugin_host", "sample_memory"]


class PluginHostFactory(Protocol):
    """The type of the :func:`make_plugin_host` fixture."""

    def __call__(
        self, *plugins: object, timeout: float = 1.0, is_enabled: EnabledCheck | None = None
    ) -> PluginHost:
        """A host with the hook specifications and only ``plugins`` registered.

        Args:
            *plugins: Plugin modules, classes or objects, registered under their
                ``__name__`` (an object's type name when it has none).
            timeout: Seconds each hook implementation may take.
            is_enabled: The per-user filter; ``None`` runs every plugin for every user.

        Raises:
            pluggy.PluginValidationError: A plugin implements an unknown hook, or a hook
                with parameters the specification does not have.
        """
        ...


@pytest.fixture
def make_plugin_host() -> Iterator[PluginHostFactory]:
    """A factory of :class:`~app.plugins.host.PluginHost`, each with only the given plugins."""
    hosts: list[PluginHost] = []

    def make(*plugins: object, timeout: float = 1.0, is_enabled: EnabledCheck | None = None) -> PluginHost:
        pm = new_plugin_manager()
        for plugin in plugins:
            register_plugin(pm, plugin)
        host = PluginHost(pm, timeout=timeout, is_enabled=is_enabled)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def sample_memory() -> Memory:
    """A stored memory of a short work conversation, with a summary, an action item and an event."""
    started = datetime(2024, 5, 14, 9, 30, tzinfo=UTC)
    return Memory(
        id="0f8b2c6e4d1a4b7e9c3f5a2d8e6b1c40",
        created_at=datetime(2024, 5, 14, 9, 30, 47, tzinfo=UTC),
        started_at=started,
        finished_at=datetime(2024, 5, 14, 9, 30, 15, tzinfo=UTC),
        language="en",
        structured=Structured(
            title="Planning the Q3 launch",
            overview=(
                "Maya and the user agreed to move the product launch to the second week of "
                "July and to have the pricing page ready for review on Friday."
            ),
            emoji="🚀",
            category="work",
            action_items=[ActionItem(description="Send Maya the draft of the pricing page by Friday")],
            events=[
                Event(
                    title="Launch review with Maya",
                    start=datetime(2024, 5, 17, 15, 0, tzinfo=UTC),
                    description="Review the pricing page before the July launch.",
                    duration=45,
                )
            ],
        ),
        transcript_segments=[
            TranscriptSegment(
                text="Can we still make the June date for the launch?",
                speaker="SPEAKER_0",
                is_user=True,
                start=0.0,
                end=3.4,
            ),
            TranscriptSegment(
                text="Not really. I'd move it to the second week of July.",
                speaker="SPEAKER_1",
                start=3.9,
                end=7.2,
            ),
            TranscriptSegment(
                text="Fine. I'll have the pricing page ready for you by Friday.",
                speaker="SPEAKER_0",
                is_user=True,
                start=7.8,
                end=11.5,
            ),
            TranscriptSegment(
                text="Great, let's review it together Friday at three.",
                speaker="SPEAKER_1",
                start=12.0,
                end=14.6,
            ),
        ],
        geolocation=Geolocation(latitude=52.5200, longitude=13.4050, address="Berlin, Germany"),
    )

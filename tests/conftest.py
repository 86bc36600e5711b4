"""Shared fixtures: async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import pytest

# Fixtures for the production adapters: emulators and protocol-faithful fakes, and all of
# them at once (``production``).
pytest_plugins = [
    "tests.backends.emulators",
    "tests.fakes.pinecone_server",
    "tests.fakes.openai_server",
    "tests.production",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

"""Shared fixtures: async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import pytest

# Fixtures for the production adapters: emulators and protocol-faithful fakes.
pytest_plugins = ["tests.backends.emulators", "tests.fakes.pinecone_server", "tests.fakes.openai_server"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

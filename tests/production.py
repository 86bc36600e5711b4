"""Every production adapter at once, on its stand-in: the ``production`` fixture.

Firestore on the real emulator (emptied first), Cloud Storage on ``gcp-storage-emulator``
(emptied first), Pinecone and OpenAI on their fakes (one of each for the session, reset for
each test: the Pinecone namespace is the test's own), and Redis: the real server at
127.0.0.1:6379, database 14, under a key prefix of this test's own (its keys are deleted
afterwards, so parallel runs and other suites never meet). ``Production.settings`` turns any
``Settings`` into ones that select all of them; ``production_services`` builds them through
the same builders the server uses (:mod:`app.adapters`).

Load with ``pytest_plugins = ["tests.production"]`` (the root conftest does).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import redis.asyncio as redis

from app.adapters import (
    build_blob_store,
    build_embedder,
    build_key_value,
    build_language_model,
    build_memory_store,
    build_vector_index,
)
from app.backends.firestore_store import FirestoreMemoryStore
from app.backends.gcs_blobs import GCSBlobStore
from app.config import Settings
from app.core.ports import SpeechToText
from app.core.services import Services
from tests.backends.emulators import FIRESTORE_PROJECT, GCS_BUCKET
from tests.fakes.openai_server import OPENAI_KEY, FakeOpenAI
from tests.fakes.pinecone_server import FakePinecone

__all__ = ["REDIS_URL", "Production", "production", "production_services", "shared_openai", "shared_pinecone"]

REDIS_URL = "redis://127.0.0.1:6379/14"
EMBEDDING_DIMENSIONS = 256  # the fake's bag-of-words vectors, shortened: a faster fake index


@dataclass
class Production:
    """The stand-ins of one test and the settings that select them."""

    pinecone: FakePinecone
    openai: FakeOpenAI
    redis_prefix: str
    namespace: str

    def settings(self, base: Settings | None = None, **changes: Any) -> Settings:
        """``base`` (default ``Settings()``) with every port on its production adapter."""
        production: dict[str, Any] = {
            "memory_store": "firestore",
            "firestore_project": FIRESTORE_PROJECT,
            "vector_index": "pinecone",
            "pinecone_api_key": self.pinecone.api_key,
            "pinecone_host": self.pinecone.url,
            "pinecone_namespace": self.namespace,
            "blob_store": "gcs",
            "gcs_bucket": GCS_BUCKET,
            "redis_url": REDIS_URL,
            "redis_prefix": self.redis_prefix,
            "language_model": "openai",
            "embedder": "openai",
            "openai_api_key": OPENAI_KEY,
            "openai_base_url": f"{self.openai.url}/v1",
            "openai_embedding_dimensions": EMBEDDING_DIMENSIONS,
            "backend_timeout": 5.0,
            "backend_retries": 2,
        }
        return msgspec.structs.replace(base or Settings(), **(production | changes))

    def env(self, **changes: str) -> dict[str, str]:
        """The same choice as environment variables (for a ``.env`` file)."""
        s = self.settings()
        values = {
            "OMI_MEMORY_STORE": "firestore",
            "OMI_FIRESTORE_PROJECT": FIRESTORE_PROJECT,
            "OMI_VECTOR_INDEX": "pinecone",
            "PINECONE_API_KEY": self.pinecone.api_key,
            "PINECONE_HOST": self.pinecone.url,
            "PINECONE_NAMESPACE": self.namespace,
            "OMI_BLOB_STORE": "gcs",
            "OMI_GCS_BUCKET": GCS_BUCKET,
            "REDIS_URL": REDIS_URL,
            "OMI_REDIS_PREFIX": self.redis_prefix,
            "OMI_LANGUAGE_MODEL": "openai",
            "OMI_EMBEDDER": "openai",
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"{self.openai.url}/v1",
            "OMI_OPENAI_EMBEDDING_DIMENSIONS": str(EMBEDDING_DIMENSIONS),
            "OMI_BACKEND_TIMEOUT": str(s.backend_timeout),
            "OMI_BACKEND_RETRIES": str(s.backend_retries),
        }
        return values | changes


def production_services(settings: Settings, stt: SpeechToText) -> Services:
    """The adapters ``settings`` choose, built as ``build_services`` builds them, with ``stt``
    (the test session's shared engine) for speech."""
    embedder = build_embedder(settings)
    return Services(
        store=build_memory_store(settings),
        index=build_vector_index(settings),
        blobs=build_blob_store(settings),
        kv=build_key_value(settings),
        embedder=embedder,
        llm=build_language_model(settings, embedder),
        stt=stt,
    )


async def _redis_answering(client: redis.Redis) -> None:
    try:
        await client.ping()
    except (redis.ConnectionError, OSError) as exc:
        await client.aclose()
        pytest.fail(f"Redis does not answer at {REDIS_URL} ({exc}); start it: scripts/ensure-redis")


@pytest.fixture(scope="session")
def shared_pinecone() -> Iterator[FakePinecone]:
    """One fake Pinecone data plane for the session (``production`` resets it for each test)."""
    with FakePinecone() as fake:
        yield fake


@pytest.fixture(scope="session")
def shared_openai() -> Iterator[FakeOpenAI]:
    """One fake OpenAI API for the session (``production`` resets it for each test)."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def production(
    open_firestore: Callable[[], FirestoreMemoryStore],
    open_gcs: Callable[[], GCSBlobStore],
    shared_pinecone: FakePinecone,
    shared_openai: FakeOpenAI,
    anyio_backend: Any,
) -> AsyncIterator[Production]:
    """Every stand-in, emptied (Redis: a fresh prefix; Pinecone: a fresh namespace), with
    ``FIRESTORE_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST`` set for the SDKs."""
    admin = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    await _redis_answering(admin)
    test = uuid.uuid4().hex
    prefix = f"test:{test}:"
    for fake in (shared_pinecone, shared_openai):
        fake.reset()
    try:
        yield Production(pinecone=shared_pinecone, openai=shared_openai, redis_prefix=prefix, namespace=test)
    finally:
        for fake in (shared_pinecone, shared_openai):
            fake.reset()
        with shared_pinecone.lock:
            shared_pinecone.namespaces.pop(test, None)
        leftovers = [key async for key in admin.scan_iter(match=f"{prefix}*", count=1000)]
        if leftovers:
            await admin.delete(*leftovers)
        await admin.aclose()

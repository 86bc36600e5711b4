"""An app in a temporary data dir, with tokens for two users, on one set of backends or the other.

``api`` runs each test twice, through the ``backends`` fixture: on the embedded adapters
("embedded") and on every production adapter at once on its stand-in ("production": Firestore
and Cloud Storage emulators, Pinecone and OpenAI fakes, real Redis; see ``tests/production.py``).
A test whose assertions need the embedded adapters' exact output (the rule-based structurer's
events, MiniLM's sense of paraphrase) selects that param alone, visibly:
``@pytest.mark.parametrize("backends", ["embedded"], indirect=True)``.

Every app of the test session shares one Whisper engine (:data:`WHISPER`): the model loads
once, on the first stream opened, and the engine is closed when the session ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

from app.backends.file_blobs import FileBlobStore
from app.backends.minilm_embedder import MiniLMEmbedder
from app.backends.numpy_index import NumpyVectorIndex
from app.backends.sqlite_kv import SQLiteKeyValue
from app.backends.sqlite_store import SQLiteMemoryStore
from app.backends.whisper_stt import WhisperSpeechToText
from app.config import Settings
from app.core.ports import SegmentsCallback, SpeechStream, SpeechToText
from app.core.services import Services
from app.core.structurer import RuleBasedLanguageModel
from app.core.tokens import TokenService
from app.main import create_app
from tests.inloop import in_loop_client
from tests.production import Production, production_services


class Api(msgspec.Struct):
    """A client plus what tests need around it."""

    client: httpx.AsyncClient  # an AsyncTestClient where WebSockets are needed (listen tests)
    services: Services
    alice: dict[str, str]
    bob: dict[str, str]
    backends: str = "embedded"


class SharedEngine:
    """A speech-to-text engine shared by many apps: ``close()`` leaves it open for the next."""

    def __init__(self, engine: SpeechToText) -> None:
        self.engine = engine

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> SpeechStream:
        return await self.engine.open(language=language, sample_rate=sample_rate, on_segments=on_segments)

    async def close(self) -> None:
        pass


WHISPER = SharedEngine(WhisperSpeechToText(workers=1, cpu_threads=2))


@pytest.fixture(scope="session", autouse=True)
def _close_whisper() -> Iterator[None]:
    yield
    asyncio.run(WHISPER.engine.close())


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=2)


def embedded_services(data_dir: Path, embedder: MiniLMEmbedder, stt: SpeechToText = WHISPER) -> Services:
    return Services(
        store=SQLiteMemoryStore(data_dir / "memories.db"),
        index=NumpyVectorIndex(data_dir / "vectors.db"),
        blobs=FileBlobStore(data_dir / "blobs"),
        kv=SQLiteKeyValue(data_dir / "kv.db"),
        embedder=embedder,
        llm=RuleBasedLanguageModel(embedder),
        stt=stt,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_key="test-admin-key-", max_body_bytes=2 * 1024 * 1024)


@dataclass(frozen=True)
class Backends:
    """Makes an app's settings and services: ``backends(settings) -> (settings, services)``."""

    kind: str  # "embedded" or "production"
    make: Callable[[Settings], tuple[Settings, Services]]

    def __call__(self, settings: Settings) -> tuple[Settings, Services]:
        return self.make(settings)


@pytest.fixture(params=["embedded", "production"])
def backends(request: pytest.FixtureRequest, embedder: MiniLMEmbedder) -> Backends:
    """Settings and services for an app: the embedded adapters, or every production one."""
    if request.param == "embedded":
        return Backends(
            "embedded", lambda settings: (settings, embedded_services(settings.data_dir, embedder))
        )
    production: Production = request.getfixturevalue("production")

    def make(settings: Settings) -> tuple[Settings, Services]:
        chosen = production.settings(settings)
        return chosen, production_services(chosen, WHISPER)

    return Backends("production", make)


@pytest.fixture
async def api(settings: Settings, backends: Backends) -> AsyncIterator[Api]:
    settings, services = backends(settings)
    app = create_app(settings, services=services)
    async with in_loop_client(app) as client:
        tokens = TokenService(services.kv)
        alice = {"Authorization": f"Bearer {await tokens.create('alice')}"}
        bob = {"Authorization": f"Bearer {await tokens.create('bob')}"}
        yield Api(client=client, services=services, alice=alice, bob=bob, backends=backends.kind)

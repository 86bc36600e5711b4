"""The web pages on the embedded adapters: a client signed in as alice, helpers for the rest."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.models import (
    ActionItem,
    Event,
    Memory,
    PluginResult,
    Structured,
    TranscriptSegment,
)
from app.core.ports import SegmentsCallback, SpeechStream
from app.core.services import Services
from app.core.tokens import TokenService
from app.main import create_app
from tests.api.conftest import embedded_services

_CSRF_INPUT = re.compile(r'name="_csrf_token" value="([0-9a-f]+)"')
BASE = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class NoSpeech:
    """The pages never transcribe: a speech-to-text port that refuses to open."""

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> SpeechStream:
        raise AssertionError("the web tests open no live session")

    async def close(self) -> None:
        pass


class Site(msgspec.Struct):
    """A client signed in as alice, plus what tests need around it."""

    app: Litestar
    client: AsyncTestClient  # type: ignore[type-arg]
    services: Services
    tokens: dict[str, str]

    def api(self, uid: str) -> dict[str, str]:
        """Bearer headers for the API as ``uid``."""
        return {"Authorization": f"Bearer {self.tokens[uid]}"}


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=2)


def web_services(data_dir: Path, embedder: MiniLMEmbedder) -> Services:
    """The embedded adapters, with a speech-to-text port that refuses to open."""
    return embedded_services(data_dir, embedder, NoSpeech())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


async def started(settings: Settings, embedder: MiniLMEmbedder, base_url: str) -> AsyncIterator[Site]:
    services = web_services(settings.data_dir, embedder)
    app = create_app(settings, services=services)
    async with AsyncTestClient(app=app, base_url=base_url) as client:
        tokens = {uid: await TokenService(services.kv).create(uid) for uid in ("alice", "bob")}
        yield Site(app=app, client=client, services=services, tokens=tokens)


@pytest.fixture
async def anonymous(settings: Settings, embedder: MiniLMEmbedder) -> AsyncIterator[Site]:
    """The site with a client that has not signed in."""
    async for site in started(settings, embedder, "http://testserver.local"):
        yield site


@pytest.fixture
async def web(anonymous: Site) -> Site:
    """The site with a client signed in as alice."""
    response = await sign_in(anonymous.client, anonymous.tokens["alice"])
    assert response.status_code == 303, response.text
    return anonymous


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    """The CSRF token a page carries in its forms."""
    response = await client.get(path)
    match = _CSRF_INPUT.search(response.text)
    assert match, f"no CSRF input on {path}: {response.status_code} {response.text[:300]}"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, next_url: str = "/") -> httpx.Response:
    """Post the sign-in form as a browser would (the CSRF token from the form)."""
    form = {"token": token, "next": next_url, "_csrf_token": await csrf_token(client)}
    return await client.post("/login", data=form, follow_redirects=False)


async def post_form(
    client: httpx.AsyncClient, path: str, data: dict[str, str] | None = None, *, htmx: bool = False
) -> httpx.Response:
    """A form post from a page: the token in the form, or in the header for htmx."""
    token = await csrf_token(client, "/")
    if htmx:
        headers = {"HX-Request": "true", "X-CSRFToken": token}
        return await client.post(path, data=data or {}, headers=headers)
    return await client.post(path, data={**(data or {}), "_csrf_token": token})


HTMX = {"HX-Request": "true"}


def memory(
    memory_id: str,
    title: str = "A walk in the park",
    *,
    minutes_ago: int = 0,
    category: Any = "personal",
    emoji: str = "🌳",
    overview: str = "We walked and talked.",
    segments: list[TranscriptSegment] | None = None,
    action_items: list[ActionItem] | None = None,
    events: list[Event] | None = None,
    plugins_results: list[PluginResult] | None = None,
    discarded: bool = False,
) -> Memory:
    """A finished memory, as the pipeline would have stored it."""
    created = BASE - timedelta(minutes=minutes_ago)
    return Memory(
        id=memory_id,
        created_at=created,
        started_at=created - timedelta(minutes=5),
        finished_at=created,
        structured=Structured(
            title=title,
            overview=overview,
            emoji=emoji,
            category=category,
            action_items=action_items or [],
            events=events or [],
        ),
        transcript_segments=segments
        or [
            TranscriptSegment(
                text="Shall we walk to the lake?", speaker="SPEAKER_0", is_user=True, start=0, end=2
            ),
            TranscriptSegment(text="Yes, after lunch.", speaker="SPEAKER_1", start=2.5, end=4),
        ],
        plugins_results=plugins_results or [],
        discarded=discarded,
    )

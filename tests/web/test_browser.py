"""The web app in a real browser: Playwright driving Debian's Chromium against a real server.

The server is uvicorn in a thread (``tests/web/server.py``) over the embedded defaults in a
temporary data dir, with an Omi plugin catalogue in a temporary file. Chromium is Debian's
package (``apt-get install chromium``; ``.ci/run`` installs it): these tests fail, rather
than skip, when it is missing. Screenshots of each page go to ``test-results/browser/``
(ignored by git); with ``OMI_README_SCREENSHOTS=1`` the memory list and a memory page are
also written to ``docs/img/`` for the README.
"""

from __future__ import annotations

import json
import os
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.config import Settings
from app.core.tokens import TokenService
from app.main import create_app
from tests.web.server import Served, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-results" / "browser"
README_IMAGES = ROOT / "docs" / "img"
CLIP = Path(__file__).resolve().parents[3] / "shared" / "audio" / "standup.wav"
WAIT_MS = 30_000

pytestmark = pytest.mark.slow

MEMORIES = {
    "trip": "I booked the flights and the hotel for our holiday in Lisbon next month.",
    "doctor": "The doctor said my blood pressure is fine but I should sleep more.",
    "budget": "We went over the quarterly budget and agreed to cut marketing costs.",
    "release": (
        "Good morning everyone. I need to review the pull request from Maria today. "
        "I need to update the release notes before the launch. "
        "Don't forget that the design review is next Tuesday at three in the afternoon."
    ),
}
CATALOGUE = [
    {
        "id": "daily-digest",
        "name": "Daily digest",
        "author": "Ada",
        "description": "Sums up each conversation in three bullet points.",
        "image": "",
        "capabilities": ["memories"],
        "memory_prompt": "Sum up the conversation in three bullet points.",
    }
]


def _playwright() -> Any:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium); "
            ".ci/run does this. The browser tests never download a browser."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'")
    return sync_playwright


class World:
    """The running server, alice's and bob's tokens and the memories made through the API."""

    def __init__(self, served: Served, tokens: dict[str, str], memories: dict[str, str]) -> None:
        self.served = served
        self.tokens = tokens
        self.memories = memories


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("browser")
    catalogue = folder / "community-plugins.json"
    catalogue.write_text(json.dumps(CATALOGUE), encoding="utf-8")
    settings = Settings(data_dir=folder / "data", plugins_catalogue=str(catalogue))
    app = create_app(settings)
    with serving(app) as served:
        kv = app.state.services.kv
        tokens = {uid: served.run(TokenService(kv).create(uid)) for uid in ("alice", "bob")}
        memories: dict[str, str] = {}
        with httpx.Client(base_url=served.url, timeout=120.0) as api:
            for name, text in MEMORIES.items():
                body = {
                    "started_at": "2026-11-23T09:00:00Z",
                    "finished_at": "2026-11-23T09:05:00Z",
                    "transcript_segments": [{"text": text, "speaker": "SPEAKER_0", "is_user": True}],
                }
                headers = {"Authorization": f"Bearer {tokens['alice']}"}
                response = api.post("/v1/memories", json=body, headers=headers)
                assert response.status_code == 200, response.text
                memories[name] = response.json()["memory"]["id"]
        yield World(served, tokens, memories)


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with _playwright()() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Tab:
    """A page of a fresh browser context, with its console errors collected."""

    def __init__(self, browser: Any, world: World) -> None:
        self.context = browser.new_context(viewport={"width": 1000, "height": 760}, base_url=world.served.url)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in(self, token: str) -> None:
        self.page.goto("/login")
        self.page.fill("#token", token)
        self.page.click("form[action='/login'] button[type=submit]")
        self.page.wait_for_url("**/")

    def shot(self, name: str, readme: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        if readme and os.environ.get("OMI_README_SCREENSHOTS") == "1":
            README_IMAGES.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(README_IMAGES / f"{name}.png"))

    def close(self) -> None:
        self.context.close()
        assert [e for e in self.errors if "Content Security Policy" in e] == [], self.errors


@pytest.fixture
def alice(browser: Any, world: World) -> Iterator[Tab]:
    tab = Tab(browser, world)
    tab.sign_in(world.tokens["alice"])
    yield tab
    tab.close()


def test_sign_in_with_a_token(browser: Any, world: World) -> None:
    tab = Tab(browser, world)
    page = tab.page
    page.goto("/")
    page.wait_for_url("**/login?next=%2F")
    tab.shot("login")
    page.fill("#token", "omi_not-a-real-token")
    page.click("form[action='/login'] button[type=submit]")
    assert "That token is not valid" in page.inner_text("main")
    page.fill("#token", world.tokens["alice"])
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("ol.memories li").count() == len(MEMORIES)
    assert page.locator("nav a[aria-current=page]").inner_text() == "Memories"
    tab.shot("memory-list", readme=True)
    tab.close()


def test_search_by_a_paraphrase_and_open_the_result(alice: Tab, world: World) -> None:
    page = alice.page
    page.fill("input[type=search]", "vacation travel plans")
    trip = world.memories["trip"]
    first = page.locator("#results ol.memories li").first.locator("a")
    first.and_(page.locator(f"a[href='/memories/{trip}']")).wait_for()
    assert parse_qs(urlsplit(page.url).query)["q"] == ["vacation travel plans"]  # in the URL
    alice.shot("search")
    first.click()
    page.wait_for_url(f"**/memories/{trip}")
    assert "Lisbon" in page.inner_text("#transcript")
    alice.shot("memory")


def test_tick_an_action_item_and_see_it_persist(alice: Tab, world: World) -> None:
    page = alice.page
    page.goto(f"/memories/{world.memories['release']}")
    item = page.locator("#action-item-0")
    box = item.locator("input[type=checkbox]")
    assert not box.is_checked()
    alice.shot("memory-page", readme=True)
    box.check()
    page.locator("#action-item-0.done").wait_for()
    page.reload()
    assert page.locator("#action-item-0 input[type=checkbox]").is_checked()
    assert "done" in (page.locator("#action-item-0").get_attribute("class") or "")


def test_enable_a_plugin_and_write_a_review(alice: Tab) -> None:
    page = alice.page
    page.goto("/plugins")
    # a form to correct (a 422, such as a refused setup check) is swapped in like a success
    assert page.evaluate("htmx.config.responseHandling.some((r) => r.code === '422' && r.swap)")
    card = page.locator("#plugin-daily-digest")
    assert "Sums up each conversation" in card.inner_text()
    card.locator("input[role=switch]").check()
    page.locator("#plugin-daily-digest.enabled").wait_for()
    assert page.locator("#plugin-daily-digest input[role=switch]").is_checked()
    card = page.locator("#plugin-daily-digest")
    card.locator("summary", has_text="Write a review").click()
    card.locator("input[name=score][value='5']").check()
    card.locator("textarea[name=review]").fill("Short and <useful>.")
    card.locator("button", has_text="Save review").click()
    page.locator("#plugin-daily-digest .rating", has_text="5.0 from 1 review").wait_for()
    page.reload()
    card = page.locator("#plugin-daily-digest")
    assert card.locator("input[role=switch]").is_checked()
    card.locator("summary", has_text="Read the reviews").click()
    assert "Short and <useful>." in card.locator(".review-list").inner_text()
    alice.shot("plugins")


def test_the_settings_page_shows_a_new_key_once(alice: Tab) -> None:
    page = alice.page
    page.goto("/settings")
    page.click("#keys button:has-text('Create a key')")
    key = page.locator(".new-key input.key").input_value()
    assert key.startswith("omi_ik_")
    alice.shot("settings")
    page.reload()
    assert key not in page.content() and page.locator("#keys ul.keys li").count() == 1


def _stream(url: str, token: str, done: threading.Event, failures: list[BaseException]) -> None:
    """Send the corpus clip to /listen as pcm16 (faster than real time), then wait for ``done``."""
    from websockets.sync.client import connect

    try:
        with wave.open(str(CLIP), "rb") as clip:
            assert clip.getframerate() == 16_000 and clip.getnchannels() == 1
            pcm = clip.readframes(clip.getnframes())
        query = "codec=pcm16&sample_rate=16000&language=en&include_speech_profile=false"
        headers = {"Authorization": f"Bearer {token}"}
        with connect(f"{url}/listen?{query}", additional_headers=headers, max_size=None) as socket:
            for start in range(0, len(pcm), 3_200):  # 100 ms frames
                socket.send(pcm[start : start + 3_200])
                time.sleep(0.02)
            socket.send(bytes(16_000 * 2 * 2))  # two seconds of silence: the last words end
            done.wait(300)
    except BaseException as exc:
        failures.append(exc)


def test_watch_a_live_session_line_by_line(browser: Any, alice: Tab, world: World) -> None:
    page = alice.page
    page.goto("/live")
    page.locator("#live-status", has_text="Connected").wait_for()
    bob = Tab(browser, world)
    bob.sign_in(world.tokens["bob"])
    bob.page.goto("/live")
    bob.page.locator("#live-status", has_text="Connected").wait_for()
    done, failures = threading.Event(), []  # type: ignore[var-annotated]
    ws_url = world.served.url.replace("http://", "ws://")
    streamer = threading.Thread(target=_stream, args=(ws_url, world.tokens["alice"], done, failures))
    streamer.start()
    try:
        page.locator("#live-lines li").first.wait_for(timeout=240_000)
        page.locator("#live-lines li").nth(1).wait_for(timeout=240_000)
    finally:
        done.set()
        streamer.join(120)
    assert failures == []
    text = page.inner_text("#live-lines").lower()
    assert any(word in text for word in ("morning", "standup", "stand up", "login", "payment", "review"))
    alice.shot("live")
    assert bob.page.locator("#live-lines li").count() == 0  # another user's stream is never shown
    bob.close()


def test_sign_out(alice: Tab) -> None:
    page = alice.page
    page.click("form.signout button")
    page.wait_for_url("**/login")
    page.goto("/settings")
    page.wait_for_url("**/login?next=%2Fsettings")

"""The plugin catalogue: Omi JSON and installed entries, per-user state, reviews and ratings."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.backends.sqlite_kv import SQLiteKeyValue
from app.plugins import PluginInfo
from app.plugins.catalogue import (
    PRIOR_COUNT,
    PRIOR_SCORE,
    Catalogue,
    enabled_plugins_key,
    parse_omi_catalogue,
    reviews_key,
    weighted_rating,
)
from tests.fakes import static_server as fakes
from tests.fakes.static_server import StaticServer

pytestmark = pytest.mark.anyio

static_server = fakes.static_server

# The shape of Omi's community-plugins.json: a prompt plugin, an external integration, a
# deleted entry; extra fields (as later Omi versions add) are ignored.
OMI_JSON: list[dict[str, Any]] = [
    {
        "id": "mentor-01",
        "name": "Mentor",
        "author": "Omi",
        "description": "Gives feedback on how you communicate.",
        "image": "/plugins/logos/mentor-01.jpg",
        "memory_prompt": "Give the user one tip to communicate better.",
        "chat_prompt": "You are a mentor.",
        "capabilities": ["memories", "chat"],
        "deleted": False,
    },
    {
        "id": "news-checker",
        "name": "News checker",
        "author": "Omi",
        "description": "Checks the news you talk about.",
        "image": "/plugins/logos/news.jpg",
        "capabilities": ["external_integration", "proactive_notification"],
        "external_integration": {
            "triggers_on": "transcript_processed",
            "webhook_url": "https://plugins.example.org/news",
            "setup_completed_url": None,
            "setup_instructions_file_path": "/plugins/instructions/news/README.md",
        },
        "deleted": False,
        "private": False,
    },
    {"id": "old-one", "name": "Old", "capabilities": ["memories"], "memory_prompt": "x", "deleted": True},
]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[SQLiteKeyValue]:
    store = SQLiteKeyValue(tmp_path / "kv.db")
    yield store
    await store.close()


@pytest.fixture
def omi_file(tmp_path: Path) -> Path:
    path = tmp_path / "community-plugins.json"
    write(path, json.dumps(OMI_JSON))
    return path


def write(path: Path, text: str) -> None:
    """Sync on purpose: a test's file write is not what is being measured."""
    path.write_text(text)


def installed(*infos: PluginInfo) -> Any:
    return lambda: list(infos)


HELLO = PluginInfo(id="hello", name="Hello", author="Ada", capabilities=("memories",))
ALWAYS = PluginInfo(id="prompt_plugins", name="Prompt plugins", always_on=True)


def test_parse_reads_the_community_plugins_shape() -> None:
    mentor, news, old = parse_omi_catalogue(json.dumps(OMI_JSON).encode())
    assert mentor.id == "mentor-01"
    assert mentor.capabilities == ["memories", "chat"]
    assert mentor.memory_prompt == "Give the user one tip to communicate better."
    assert mentor.external_integration is None
    assert news.capabilities == ["external_integration"]  # unknown capabilities are left out
    assert news.external_integration is not None
    assert news.external_integration.triggers_on == "transcript_processed"
    assert news.external_integration.setup_completed_url is None
    assert old.deleted
    # per-user fields start empty
    assert (mentor.enabled, mentor.rating_count, mentor.rating_avg, mentor.reviews) == (False, 0, None, [])


def test_parse_skips_bad_entries_and_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    entries = [
        {"id": "no-name"},
        {
            "id": "bad-trigger",
            "name": "X",
            "external_integration": {"triggers_on": "never", "webhook_url": "u"},
        },
        {"id": "good", "name": "Good"},
        {"id": "good", "name": "Twice"},
        "not an object",
    ]
    with caplog.at_level(logging.ERROR):
        parsed = parse_omi_catalogue(json.dumps(entries).encode())
    assert [(p.id, p.name) for p in parsed] == [("good", "Good")]
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 4


@pytest.mark.parametrize("data", [b"{not json", b'{"plugins": []}', b'"a string"'])
def test_parse_refuses_what_is_not_a_json_list(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_omi_catalogue(data)


async def test_entries_come_from_installed_plugins_and_the_omi_file(
    kv: SQLiteKeyValue, omi_file: Path
) -> None:
    catalogue = Catalogue(kv, installed=installed(HELLO, ALWAYS), source=str(omi_file))
    await catalogue.load()
    assert [e.id for e in catalogue.entries()] == ["hello", "mentor-01", "news-checker", "old-one"]
    hello = catalogue.entry("hello")
    assert hello is not None
    assert (hello.name, hello.author, hello.capabilities) == ("Hello", "Ada", ["memories"])
    assert catalogue.entry("prompt_plugins") is None  # always-on plugins are not a choice
    assert catalogue.entry("nope") is None
    assert [e.id for e in catalogue.omi_entries()] == ["mentor-01", "news-checker"]  # not deleted
    assert catalogue.error is None


async def test_an_installed_plugin_hides_an_omi_entry_with_its_id(kv: SQLiteKeyValue, omi_file: Path) -> None:
    mentor = PluginInfo(id="mentor-01", name="Local mentor")
    catalogue = Catalogue(kv, installed=installed(mentor), source=str(omi_file))
    await catalogue.load()
    assert [(e.id, e.name) for e in catalogue.entries()][:2] == [
        ("mentor-01", "Local mentor"),
        ("news-checker", "News checker"),
    ]
    assert [e.id for e in catalogue.omi_entries()] == ["news-checker"]


async def test_the_file_is_read_once_until_refreshed(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(), source=str(omi_file))
    await catalogue.load()
    write(omi_file, json.dumps(OMI_JSON[:1]))
    await catalogue.load()
    assert len(catalogue.entries()) == 3
    assert await catalogue.refresh()
    assert [e.id for e in catalogue.entries()] == ["mentor-01"]


@pytest.mark.parametrize("content", [None, "{broken", '{"a": 1}'])
async def test_a_bad_source_is_a_logged_error_and_no_omi_entries(
    kv: SQLiteKeyValue, tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | None
) -> None:
    path = tmp_path / "plugins.json"
    if content is not None:
        write(path, content)
    catalogue = Catalogue(kv, installed=installed(HELLO), source=str(path))
    with caplog.at_level(logging.ERROR):
        await catalogue.load()
    assert [e.id for e in catalogue.entries()] == ["hello"]
    assert catalogue.error
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


async def test_a_failed_refresh_keeps_the_entries_it_had(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(), source=str(omi_file))
    await catalogue.load()
    write(omi_file, "[")
    assert not await catalogue.refresh()
    assert len(catalogue.entries()) == 3
    assert catalogue.error


async def test_the_catalogue_can_come_from_a_url(kv: SQLiteKeyValue, static_server: StaticServer) -> None:
    url = static_server.serve("/community-plugins.json", json.dumps(OMI_JSON))
    catalogue = Catalogue(kv, installed=installed(), source=url)
    await catalogue.load()
    await catalogue.load()
    assert [e.id for e in catalogue.omi_entries()] == ["mentor-01", "news-checker"]
    assert len(static_server.queries("/community-plugins.json")) == 1


@pytest.mark.parametrize(("status", "body"), [(404, "{}"), (200, "<html>")])
async def test_a_bad_url_is_a_logged_error(
    kv: SQLiteKeyValue, static_server: StaticServer, status: int, body: str
) -> None:
    url = static_server.serve("/plugins.json", body, status=status)
    catalogue = Catalogue(kv, installed=installed(), source=url)
    await catalogue.load()
    assert catalogue.entries() == []
    assert catalogue.error


async def test_an_unreachable_url_is_a_logged_error(kv: SQLiteKeyValue) -> None:
    catalogue = Catalogue(kv, installed=installed(), source="http://127.0.0.1:9/plugins.json", timeout=2)
    await catalogue.load()
    assert catalogue.entries() == []
    assert catalogue.error


async def test_enabling_is_per_user_and_stored_under_the_original_key(
    kv: SQLiteKeyValue, omi_file: Path
) -> None:
    catalogue = Catalogue(kv, installed=installed(HELLO), source=str(omi_file))
    await catalogue.load()
    await catalogue.enable("mentor-01", "alice")
    await catalogue.enable("hello", "alice")
    await catalogue.enable("mentor-01", "alice")  # twice is once
    assert json.loads(await kv.get(enabled_plugins_key("alice")) or "") == ["mentor-01", "hello"]
    assert await catalogue.is_enabled("mentor-01", "alice")
    assert not await catalogue.is_enabled("mentor-01", "bob")
    assert await catalogue.disable("mentor-01", "alice")
    assert not await catalogue.disable("mentor-01", "alice")
    assert not await catalogue.is_enabled("mentor-01", "alice")
    assert await catalogue.enabled_ids("alice") == ["hello"]


async def test_deleted_or_vanished_entries_are_never_enabled(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(), source=str(omi_file))
    await catalogue.load()
    await catalogue.enable("old-one", "alice")
    await catalogue.enable("mentor-01", "alice")
    assert not await catalogue.is_enabled("old-one", "alice")
    write(omi_file, json.dumps(OMI_JSON[1:]))
    await catalogue.refresh()
    assert not await catalogue.is_enabled("mentor-01", "alice")


async def test_concurrent_changes_by_one_user_lose_nothing(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(HELLO), source=str(omi_file))
    await catalogue.load()
    await catalogue.enable("news-checker", "alice")
    await asyncio.gather(
        catalogue.enable("mentor-01", "alice"),
        catalogue.enable("hello", "alice"),
        catalogue.disable("news-checker", "alice"),
    )
    assert sorted(await catalogue.enabled_ids("alice")) == ["hello", "mentor-01"]
    assert await kv.get(enabled_plugins_key("alice") + ":lock") is None


async def test_two_catalogues_on_one_store_share_the_lock(kv: SQLiteKeyValue, omi_file: Path) -> None:
    """Two server processes: the lock is in the KeyValue, not in memory."""
    first = Catalogue(kv, installed=installed(HELLO), source=str(omi_file))
    second = Catalogue(kv, installed=installed(HELLO), source=str(omi_file))
    await asyncio.gather(first.load(), second.load())
    ids = ["mentor-01", "news-checker", "hello"]
    await asyncio.gather(*(c.enable(i, "alice") for c, i in zip([first, second, first], ids, strict=True)))
    assert sorted(await second.enabled_ids("alice")) == sorted(ids)


async def test_reviews_one_per_user_replaced_on_resubmit(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(), source=str(omi_file), clock=Clock())
    await catalogue.load()
    await catalogue.review("mentor-01", "alice", 2, "meh")
    await catalogue.review("mentor-01", "bob", 5, "great")
    await catalogue.review("mentor-01", "alice", 4.5, "better now")
    stored = json.loads(await kv.get(reviews_key("mentor-01")) or "")
    assert set(stored) == {"alice", "bob"}
    assert stored["alice"]["score"] == 4.5
    assert stored["alice"]["review"] == "better now"
    assert set(stored["alice"]) == {"uid", "rated_at", "score", "review"}
    with pytest.raises(ValueError):
        await catalogue.review("mentor-01", "alice", 6, "too much")


async def test_concurrent_reviews_of_one_plugin_lose_nothing(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(), source=str(omi_file))
    await catalogue.load()
    users = [f"user{i}" for i in range(8)]
    await asyncio.gather(*(catalogue.review("mentor-01", uid, 4, "") for uid in users))
    assert sorted(await catalogue.reviews("mentor-01")) == users


async def test_the_listing_has_ratings_the_callers_state_and_anonymous_reviews(
    kv: SQLiteKeyValue, omi_file: Path
) -> None:
    catalogue = Catalogue(kv, installed=installed(HELLO), source=str(omi_file), clock=Clock())
    await catalogue.load()
    await catalogue.review("mentor-01", "alice", 5, "love it")
    await catalogue.review("mentor-01", "bob", 4, "good")
    await catalogue.enable("mentor-01", "alice")
    listing = {p.id: p for p in await catalogue.for_user("alice")}
    mentor = listing["mentor-01"]
    assert (mentor.enabled, mentor.rating_avg, mentor.rating_count) == (True, 4.5, 2)
    assert mentor.user_review is not None and mentor.user_review.review == "love it"
    assert [(r.uid, r.score) for r in mentor.reviews] == [("anonymous", 4), ("alice", 5)]  # newest first
    assert listing["hello"].rating_avg is None
    assert listing["hello"].user_review is None
    for_bob = {p.id: p for p in await catalogue.for_user("bob")}["mentor-01"]
    assert for_bob.enabled is False
    assert for_bob.user_review is not None and for_bob.user_review.uid == "bob"
    assert {r.uid for r in for_bob.reviews} == {"bob", "anonymous"}


def test_the_weighted_rating_pools_the_prior() -> None:
    assert weighted_rating(None, 0) == PRIOR_SCORE
    assert weighted_rating(5.0, 1) == pytest.approx((5 + PRIOR_SCORE * PRIOR_COUNT) / (1 + PRIOR_COUNT))
    # one 5-star review is worth less than forty reviews averaging 4.8
    assert weighted_rating(5.0, 1) < weighted_rating(4.8, 40)
    # and a single bad review sinks below an unrated plugin
    assert weighted_rating(1.0, 1) < weighted_rating(None, 0)


async def test_the_listing_is_sorted_by_weighted_rating(kv: SQLiteKeyValue, omi_file: Path) -> None:
    catalogue = Catalogue(kv, installed=installed(HELLO), source=str(omi_file))
    await catalogue.load()
    await catalogue.review("hello", "u0", 1, "")  # below the prior: sinks under the unrated
    await catalogue.review("news-checker", "u0", 5, "")  # one 5
    for i in range(10):  # ten 4.5s beat one 5
        await catalogue.review("mentor-01", f"u{i}", 4 if i % 2 else 5, "")
    order = [p.id for p in await catalogue.for_user("alice")]
    assert order == ["mentor-01", "news-checker", "old-one", "hello"]


async def test_unreadable_stored_state_is_ignored(
    kv: SQLiteKeyValue, omi_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    catalogue = Catalogue(kv, installed=installed(), source=str(omi_file))
    await catalogue.load()
    await kv.set(enabled_plugins_key("alice"), "{not json")
    await kv.set(reviews_key("mentor-01"), '{"bob": {"score": "high"}}')
    assert await catalogue.enabled_ids("alice") == []
    listing = await catalogue.for_user("alice")
    assert all(p.rating_count == 0 for p in listing)
    await catalogue.enable("mentor-01", "alice")
    assert await catalogue.enabled_ids("alice") == ["mentor-01"]

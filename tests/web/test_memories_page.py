"""``/``: the memory list, its filters, pagination and search by meaning."""

from __future__ import annotations

import re
from html import unescape

import pytest

from app.web.memories import PAGE_SIZE, MemoryFilters
from tests.web.conftest import HTMX, Site, memory, post_form

pytestmark = pytest.mark.anyio

_LINK = re.compile(r'<a href="/memories/([^"]+)">')


def ids(html: str) -> list[str]:
    return _LINK.findall(html)


def page_link(html: str, rel: str) -> str:
    match = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
    assert match, f"no {rel} link"
    return unescape(match.group(1))


async def test_memories_newest_first_with_emoji_title_category_and_time(web: Site) -> None:
    await web.services.store.put(
        "alice", memory("old", "Old talk", minutes_ago=60, emoji="📚", category="education")
    )
    await web.services.store.put(
        "alice", memory("new", "New talk", minutes_ago=1, emoji="💼", category="work")
    )
    await web.services.store.put("bob", memory("bobs", "Bob's talk"))
    response = await web.client.get("/")
    assert response.status_code == 200
    html = response.text
    assert html.startswith("<!doctype html>") and 'id="results"' in html
    assert ids(html) == ["new", "old"]
    assert "💼" in html and "New talk" in html and ">work<" in html
    assert '<time datetime="2026-11-23T08:54:00+00:00">Mon 23 Nov 2026, 08:54 UTC</time>' in html
    assert "Bob&#39;s talk" not in html


async def test_an_htmx_request_gets_only_the_results(web: Site) -> None:
    await web.services.store.put("alice", memory("m1"))
    response = await web.client.get("/", headers=HTMX)
    assert response.status_code == 200
    assert "<html" not in response.text and 'id="results"' not in response.text
    assert ids(response.text) == ["m1"]
    restore = await web.client.get("/", headers={**HTMX, "HX-History-Restore-Request": "true"})
    assert restore.text.startswith("<!doctype html>")  # going back in history needs the whole page


async def test_the_search_box_searches_as_one_types_with_a_debounce(web: Site) -> None:
    html = (await web.client.get("/")).text
    assert 'hx-trigger="input changed delay:300ms, search"' in html
    assert 'hx-target="#results"' in html and 'name="q"' in html


async def test_discarded_memories_are_hidden_unless_asked_for(web: Site) -> None:
    await web.services.store.put("alice", memory("kept", minutes_ago=2))
    await web.services.store.put("alice", memory("gone", minutes_ago=1, discarded=True))
    assert ids((await web.client.get("/")).text) == ["kept"]
    shown = (await web.client.get("/?discarded=true")).text
    assert ids(shown) == ["gone", "kept"] and "discarded</span>" in shown


async def test_category_and_date_filters(web: Site) -> None:
    await web.services.store.put("alice", memory("w1", category="work", minutes_ago=3 * 24 * 60))
    await web.services.store.put("alice", memory("w2", category="work", minutes_ago=10))
    await web.services.store.put("alice", memory("h1", category="health", minutes_ago=5))
    assert ids((await web.client.get("/?category=work")).text) == ["w2", "w1"]
    assert ids((await web.client.get("/?start=2026-11-22&end=2026-11-23")).text) == ["h1", "w2"]
    assert ids((await web.client.get("/?end=2026-11-21")).text) == ["w1"]
    assert ids((await web.client.get("/?category=work&start=2026-11-23")).text) == ["w2"]
    form = (await web.client.get("/?category=work&start=2026-11-23&discarded=true")).text
    assert '<option value="work" selected>' in form and 'value="2026-11-23"' in form and "checked" in form
    # What a browser sends for untouched fields is fine too.
    assert ids((await web.client.get("/?q=&category=&start=&end=")).text) == ["h1", "w2", "w1"]


async def test_bad_filters_are_a_clear_400(web: Site) -> None:
    for query in ("category=astrology", "start=yesterday", "end=2026-13-40", "page=0"):
        response = await web.client.get(f"/?{query}")
        assert response.status_code == 400, query
        assert response.headers["content-type"].startswith("text/html")


async def test_pagination_keeps_the_filters_in_the_url(web: Site) -> None:
    for i in range(PAGE_SIZE + 5):
        await web.services.store.put("alice", memory(f"w{i:03d}", category="work", minutes_ago=i))
    await web.services.store.put("alice", memory("other", category="health", minutes_ago=0))
    first = (await web.client.get("/?category=work&start=2026-11-20&discarded=true")).text
    assert len(ids(first)) == PAGE_SIZE and "other" not in ids(first)
    older = page_link(first, "next")
    assert older == "/?category=work&start=2026-11-20&discarded=true&page=2"
    second = (await web.client.get(older, headers=HTMX)).text
    assert ids(second) == [f"w{i:03d}" for i in range(PAGE_SIZE, PAGE_SIZE + 5)]
    assert 'rel="next"' not in second
    assert page_link(second, "prev") == "/?category=work&start=2026-11-20&discarded=true"


def test_filter_urls_leave_defaults_out() -> None:
    assert MemoryFilters().url() == "/"
    assert MemoryFilters(q="a b&c", page=3).url(page=4) == "/?q=a+b%26c&page=4"


async def test_search_finds_memories_by_meaning(web: Site) -> None:
    texts = {
        "trip": "I booked the flights and the hotel for our holiday in Lisbon next month.",
        "doctor": "The doctor said my blood pressure is fine but I should sleep more.",
        "budget": "We went over the quarterly budget and agreed to cut marketing costs.",
    }
    made = {}
    for name, text in texts.items():
        body = {
            "started_at": "2026-11-23T09:00:00Z",
            "finished_at": "2026-11-23T09:05:00Z",
            "transcript_segments": [{"text": text, "speaker": "SPEAKER_0"}],
        }
        created = await web.client.post("/v1/memories", json=body, headers=web.api("alice"))
        made[name] = created.json()["memory"]["id"]
    response = await web.client.get("/?q=vacation+travel+plans", headers=HTMX)
    assert response.status_code == 200 and "<html" not in response.text
    found = ids(response.text)
    assert found[0] == made["trip"]
    assert "match “vacation travel plans”" in unescape(response.text)
    health = ids((await web.client.get("/?q=medical+checkup")).text)
    assert health[0] == made["doctor"]


async def test_search_leaves_out_other_users_and_discarded_memories(web: Site) -> None:
    body = {
        "started_at": "2026-11-23T09:00:00Z",
        "finished_at": "2026-11-23T09:05:00Z",
        "transcript_segments": [
            {"text": "Let us plan the garden: tomatoes, beans and roses.", "speaker": "SPEAKER_0"}
        ],
    }
    await web.client.post("/v1/memories", json=body, headers=web.api("bob"))
    mine = (await web.client.post("/v1/memories", json=body, headers=web.api("alice"))).json()["memory"]["id"]
    assert ids((await web.client.get("/?q=gardening")).text) == [mine]
    await post_form(web.client, f"/memories/{mine}/discard", htmx=True)
    assert ids((await web.client.get("/?q=gardening")).text) == []


async def test_nothing_found_says_so(web: Site) -> None:
    assert "No memories yet" in (await web.client.get("/")).text
    assert "No memories match" in (await web.client.get("/?category=work")).text

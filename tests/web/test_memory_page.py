"""``/memories/{id}``: the page, its fragments and the forms that change a memory."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.core.models import ActionItem, Event, Memory, PluginResult, TranscriptSegment
from app.core.pipeline import vector_id
from app.web.memory import turns
from tests.web.conftest import HTMX, Site, csrf_token, memory, post_form

pytestmark = pytest.mark.anyio

HOSTILE = "<script>alert(1)</script>"


def rich(memory_id: str = "m1", title: str = "Planning the launch") -> Memory:
    return memory(
        memory_id,
        title,
        overview="We agreed on the launch plan.",
        action_items=[
            ActionItem(description="Send the slides"),
            ActionItem(description="Book a room", completed=True),
        ],
        events=[
            Event(
                title="Design review; room 4, floor 2",
                description="Bring the mock-ups.\nAnd coffee.",
                start=datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
                duration=45,
            )
        ],
        plugins_results=[PluginResult(plugin_id="summariser", content="Three decisions were made.")],
        segments=[
            TranscriptSegment(
                text="Let's plan the launch.", speaker="SPEAKER_0", is_user=True, start=0, end=2
            ),
            TranscriptSegment(text="Slides first.", speaker="SPEAKER_0", is_user=True, start=2, end=3),
            TranscriptSegment(text="I'll book a room.", speaker="SPEAKER_1", start=65, end=67),
        ],
    )


async def test_the_memory_page_shows_everything(web: Site) -> None:
    await web.services.store.put("alice", rich())
    response = await web.client.get("/memories/m1")
    assert response.status_code == 200
    html = response.text
    assert html.startswith("<!doctype html>") and "<title>Planning the launch · omi</title>" in html
    assert "We agreed on the launch plan." in html
    assert 'id="action-items"' in html and "Send the slides" in html
    assert 'name="completed" value="true" checked' in html  # the completed one
    assert "Design review; room 4, floor 2" in html and 'href="/memories/m1/events/0.ics" download' in html
    assert "What plugins said" in html and "summariser" in html and "Three decisions were made." in html
    # The transcript by speaker and time: the user's two segments are one turn.
    you = '<span class="who">You</span> <span class="at">0:00</span>'
    assert f"{you}<p>Let&#39;s plan the launch. Slides first.</p>" in html
    assert '<span class="who">Speaker 1</span> <span class="at">1:05</span>' in html
    for action in ("edit", "discard", "reprocess", "delete"):
        assert f'action="/memories/m1/{action}"' in html or f'href="/memories/m1/{action}"' in html


async def test_an_htmx_request_gets_the_memory_fragment(web: Site) -> None:
    await web.services.store.put("alice", rich())
    response = await web.client.get("/memories/m1", headers=HTMX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<article id="memory"')
    assert "<html" not in response.text and 'id="transcript"' not in response.text


def test_turns_join_a_speakers_consecutive_segments() -> None:
    segments = [
        TranscriptSegment(text="a", speaker="SPEAKER_0", start=0, end=1),
        TranscriptSegment(text="b", speaker="SPEAKER_0", start=1, end=2),
        TranscriptSegment(text="c", speaker="SPEAKER_1", start=3600, end=3601),
        TranscriptSegment(text="d", speaker="SPEAKER_0", start=3602, end=3603),
    ]
    assert [(t.speaker, t.start, t.text) for t in turns(segments)] == [
        ("Speaker 0", 0, "a b"),
        ("Speaker 1", 3600, "c"),
        ("Speaker 0", 3602, "d"),
    ]
    assert turns([]) == []


async def test_hostile_text_is_escaped_everywhere(web: Site) -> None:
    hostile = memory(
        "evil",
        HOSTILE,
        overview=f"{HOSTILE} & more",
        emoji=HOSTILE,
        segments=[TranscriptSegment(text=f'"><img src=x onerror=alert(1)> {HOSTILE}', speaker="SPEAKER_0")],
        action_items=[ActionItem(description=HOSTILE)],
        events=[Event(title=HOSTILE, description=HOSTILE, start=datetime(2026, 11, 25, tzinfo=UTC))],
        plugins_results=[PluginResult(plugin_id=HOSTILE, content=HOSTILE)],
    )
    await web.services.store.put("alice", hostile)
    for path, headers in [("/", {}), ("/", HTMX), ("/memories/evil", {}), ("/memories/evil/edit", {})]:
        html = (await web.client.get(path, headers=headers)).text
        assert HOSTILE not in html and "<img" not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    search = (await web.client.get(f"/?q={HOSTILE}")).text
    assert HOSTILE not in search and "&lt;script&gt;" in search


async def test_another_users_memory_is_not_found(web: Site) -> None:
    await web.services.store.put("bob", rich("bobs"))
    for path in ("/memories/bobs", "/memories/bobs/edit", "/memories/bobs/events/0.ics", "/memories/nope"):
        response = await web.client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text
    for action in ("discard", "restore", "reprocess", "delete", "action-items/0"):
        response = await post_form(web.client, f"/memories/bobs/{action}", {"title": "mine now"})
        assert response.status_code == 404, action
    response = await post_form(web.client, "/memories/bobs/edit", {"title": "mine now"})
    assert response.status_code == 404
    stored = await web.services.store.get("bob", "bobs")
    assert stored is not None and stored.structured.title == "Planning the launch" and not stored.deleted


async def test_ticking_an_action_item_persists(web: Site) -> None:
    await web.services.store.put("alice", rich())
    response = await post_form(web.client, "/memories/m1/action-items/0", {"completed": "true"}, htmx=True)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<li id="action-item-0" class="item done">')
    stored = await web.services.store.get("alice", "m1")
    assert stored is not None and [i.completed for i in stored.structured.action_items] == [True, True]
    # Without JavaScript: the form posts (unticked sends no value) and comes back to the page.
    token = await csrf_token(web.client, "/")
    plain = await web.client.post(
        "/memories/m1/action-items/1", data={"_csrf_token": token}, follow_redirects=False
    )
    assert plain.status_code == 303 and plain.headers["location"] == "/memories/m1#action-items"
    stored = await web.services.store.get("alice", "m1")
    assert stored is not None and [i.completed for i in stored.structured.action_items] == [True, False]
    missing = await post_form(web.client, "/memories/m1/action-items/7", {"completed": "true"})
    assert missing.status_code == 404


async def test_editing_the_title_and_overview(web: Site) -> None:
    await web.services.store.put("alice", rich())
    form = await web.client.get("/memories/m1/edit", headers=HTMX)
    assert form.text.lstrip().startswith('<form id="summary" class="edit"')
    assert 'value="Planning the launch"' in form.text
    full = await web.client.get("/memories/m1/edit")
    assert (
        full.text.startswith("<!doctype html>")
        and 'id="transcript"' in full.text
        and 'name="overview"' in full.text
    )
    saved = await post_form(
        web.client, "/memories/m1/edit", {"title": " Launch, take two ", "overview": "New plan."}, htmx=True
    )
    assert saved.status_code == 200 and saved.text.lstrip().startswith('<article id="memory"')
    assert "Launch, take two" in saved.text and "New plan." in saved.text
    stored = await web.services.store.get("alice", "m1")
    assert stored is not None and stored.structured.title == "Launch, take two"
    empty = await post_form(web.client, "/memories/m1/edit", {"title": "  ", "overview": "x"})
    assert empty.status_code == 400


async def test_edit_without_javascript_redirects_back(web: Site) -> None:
    await web.services.store.put("alice", rich())
    token = await csrf_token(web.client, "/")
    response = await web.client.post(
        "/memories/m1/edit",
        data={"title": "Renamed", "overview": "", "_csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/memories/m1"


async def test_discard_restore_and_delete_follow_the_vector_index(web: Site) -> None:
    body = {
        "started_at": "2026-11-23T09:00:00Z",
        "finished_at": "2026-11-23T09:05:00Z",
        "transcript_segments": [
            {"text": "We must renew the car insurance before Friday.", "speaker": "SPEAKER_0"}
        ],
    }
    made = (await web.client.post("/v1/memories", json=body, headers=web.api("alice"))).json()["memory"]
    memory_id = made["id"]
    vector = (await web.services.embedder.embed(["car insurance"]))[0]

    async def indexed() -> bool:
        matches = await web.services.index.query(vector, uid="alice", top_k=5)
        return vector_id("alice", memory_id) in [m.id for m in matches]

    assert await indexed()
    discarded = await post_form(web.client, f"/memories/{memory_id}/discard", htmx=True)
    assert (
        'class="badge">discarded' in discarded.text
        and f'action="/memories/{memory_id}/restore"' in discarded.text
    )
    assert not await indexed()
    restored = await post_form(web.client, f"/memories/{memory_id}/restore", htmx=True)
    assert f'action="/memories/{memory_id}/discard"' in restored.text
    assert await indexed()
    deleted = await post_form(web.client, f"/memories/{memory_id}/delete", htmx=True)
    assert deleted.headers["HX-Redirect"] == "/"
    assert not await indexed()
    assert (await web.client.get(f"/memories/{memory_id}")).status_code == 404
    assert memory_id not in (await web.client.get("/?discarded=true")).text


async def test_delete_without_javascript_goes_back_to_the_list(web: Site) -> None:
    await web.services.store.put("alice", rich())
    token = await csrf_token(web.client, "/")
    response = await web.client.post(
        "/memories/m1/delete", data={"_csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/"
    stored = await web.services.store.get("alice", "m1")
    assert stored is not None and stored.deleted


async def test_reprocess_structures_the_memory_again(web: Site) -> None:
    await web.services.store.put("alice", rich(title="Old title"))
    response = await post_form(web.client, "/memories/m1/reprocess", htmx=True)
    assert response.status_code == 200 and response.text.lstrip().startswith('<article id="memory"')
    stored = await web.services.store.get("alice", "m1")
    assert stored is not None and stored.structured.title != "Old title"
    assert stored.structured.title in response.text

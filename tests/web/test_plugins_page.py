"""``/plugins``: the cards, the enable switch (with the setup check), reviews, escaping."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from tests.fakes import static_server as fakes
from tests.fakes.static_server import StaticServer
from tests.web.conftest import HTMX, Site, csrf_token, post_form, sign_in, started

pytestmark = pytest.mark.anyio

static_server = fakes.static_server
HOSTILE = "<script>alert(1)</script>"


def entry(plugin_id: str, name: str, **extra: Any) -> dict[str, Any]:
    """An entry of Omi's community-plugins.json."""
    return {
        "id": plugin_id,
        "name": name,
        "author": "Ada",
        "description": f"{name} does useful things.",
        "image": f"https://example.org/{plugin_id}.png",
        "capabilities": ["memories"],
        "memory_prompt": "Summarise the conversation.",
        **extra,
    }


def integration(webhook: str, setup: str | None = None, instructions: str = "") -> dict[str, Any]:
    return {
        "capabilities": ["external_integration"],
        "memory_prompt": None,
        "external_integration": {
            "triggers_on": "memory_creation",
            "webhook_url": webhook,
            "setup_completed_url": setup,
            "setup_instructions_file_path": instructions,
        },
    }


def catalogue(server: StaticServer) -> list[dict[str, Any]]:
    no = server.serve("/setup/no", '{"is_setup_completed": false}')
    yes = server.serve("/setup/yes", '{"is_setup_completed": true}')
    webhook = f"{server.url}/webhook"
    return [
        entry("summary", "Summary"),
        entry("notes", "Notes", **integration(webhook, instructions="https://example.org/notes/setup.md")),
        entry("needs-setup", "Needs setup", **integration(webhook, setup=no, instructions="/README.md")),
        entry("ready", "Ready", **integration(webhook, setup=yes)),
        entry(
            "hostile",
            HOSTILE,
            author="<b>Mallory</b>",
            description='<img src=x onerror="alert(2)">',
            image="javascript:alert(3)",
            **integration(webhook, instructions="javascript:alert(4)"),
        ),
        entry("gone", "Gone for good", deleted=True),
    ]


@pytest.fixture
def settings(tmp_path: Path, static_server: StaticServer) -> Settings:
    path = tmp_path / "community-plugins.json"
    path.write_text(json.dumps(catalogue(static_server)), encoding="utf-8")
    return Settings(data_dir=tmp_path / "data", plugins_catalogue=str(path), webhook_allow_private=True)


async def enabled_ids(web: Site, uid: str) -> set[str]:
    response = await web.client.get("/v1/plugins", headers=web.api(uid))
    return {p["id"] for p in response.json() if p["enabled"]}


async def test_the_page_shows_every_plugin_card(web: Site) -> None:
    response = await web.client.get("/plugins")
    assert response.status_code == 200
    html = response.text
    assert "<title>Plugins · omi</title>" in html and 'aria-current="page">Plugins' in html
    for name in ("Summary", "Notes", "Needs setup", "Ready"):
        assert f">{name}</a></h2>" in html
    assert "Gone for good" not in html  # deleted entries are not offered
    assert "by Ada" in html and "Summary does useful things." in html
    assert '<span class="badge">memories</span>' in html
    assert '<span class="badge">external integration</span>' in html
    assert '<img class="icon" src="https://example.org/summary.png"' in html
    assert '<article id="plugin-notes" class="card plugin">' in html
    assert 'href="https://example.org/notes/setup.md"' in html and "Setup instructions" in html
    assert 'href="/README.md"' in html  # a path on this site is a link too
    # the omi_webhooks plugin's page is linked from the webhook entries
    assert 'href="/plugins/notes/deliveries"' in html
    assert 'href="/plugins/summary/deliveries"' not in html
    assert 'name="enabled" value="true">' in html  # nothing is enabled yet
    assert "No reviews yet." in html and "Write a review" in html


async def test_htmx_gets_the_cards_and_one_plugin_its_card(web: Site) -> None:
    cards = await web.client.get("/plugins", headers=HTMX)
    assert cards.status_code == 200 and "<html" not in cards.text
    assert cards.text.lstrip().startswith("<article id=")
    card = await web.client.get("/plugins/notes", headers=HTMX)
    assert card.status_code == 200
    assert card.text.lstrip().startswith('<article id="plugin-notes"') and "<html" not in card.text
    full = await web.client.get("/plugins/notes")
    assert "<title>Notes · omi</title>" in full.text and 'href="/plugins">← All plugins' in full.text


async def test_unknown_and_deleted_plugins_are_404(web: Site) -> None:
    for path in ("/plugins/nope", "/plugins/gone", "/plugins/gone/deliveries"):
        assert (await web.client.get(path)).status_code == 404, path
    for path in ("/plugins/nope/enabled", "/plugins/gone/enabled"):
        assert (await post_form(web.client, path, {"enabled": "true"}, htmx=True)).status_code == 404
    response = await post_form(web.client, "/plugins/gone/review", {"score": "5"}, htmx=True)
    assert response.status_code == 404
    assert await enabled_ids(web, "alice") == set()


async def test_the_switch_enables_and_disables_for_the_user_only(web: Site) -> None:
    response = await post_form(web.client, "/plugins/notes/enabled", {"enabled": "true"}, htmx=True)
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<article id="plugin-notes" class="card plugin enabled">')
    assert 'name="enabled" value="true" checked>' in response.text
    assert await enabled_ids(web, "alice") == {"notes"}
    assert await enabled_ids(web, "bob") == set()
    off = await post_form(web.client, "/plugins/notes/enabled", {}, htmx=True)  # unticked: no field
    assert off.status_code == 200 and 'value="true" checked' not in off.text
    assert await enabled_ids(web, "alice") == set()


async def test_a_plain_form_post_redirects_back_to_the_card(web: Site) -> None:
    token = await csrf_token(web.client, "/plugins")
    response = await web.client.post(
        "/plugins/summary/enabled", data={"enabled": "true", "_csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/plugins/summary#plugin-summary"
    assert await enabled_ids(web, "alice") == {"summary"}


async def test_an_unfinished_setup_is_shown_on_the_card(web: Site, static_server: StaticServer) -> None:
    response = await post_form(web.client, "/plugins/needs-setup/enabled", {"enabled": "true"}, htmx=True)
    assert response.status_code == 422  # swapped in by htmx (responseHandling in base.html)
    assert response.text.lstrip().startswith('<article id="plugin-needs-setup"')
    assert 'role="alert">Not enabled: Plugin setup is not completed.</p>' in response.text
    assert 'value="true" checked' not in response.text
    assert static_server.queries("/setup/no") == [{"uid": ["alice"]}]
    plain = await post_form(web.client, "/plugins/needs-setup/enabled", {"enabled": "true"})
    assert plain.status_code == 422 and "<html" in plain.text and "Not enabled:" in plain.text
    assert await enabled_ids(web, "alice") == set()
    ready = await post_form(web.client, "/plugins/ready/enabled", {"enabled": "true"}, htmx=True)
    assert ready.status_code == 200 and "Not enabled" not in ready.text
    assert await enabled_ids(web, "alice") == {"ready"}


async def test_a_review_is_written_replaced_and_rated(web: Site) -> None:
    response = await post_form(
        web.client, "/plugins/summary/review", {"score": "4", "review": "Handy summaries."}, htmx=True
    )
    assert response.status_code == 200, response.text
    html = response.text
    assert "4.0 from 1 review" in html and "Handy summaries." in html
    assert ">You · <time" in unescape(html) and "Change your review" in html
    assert 'value="4" required checked' in html and ">Handy summaries.</textarea>" in html
    again = await post_form(
        web.client, "/plugins/summary/review", {"score": "2", "review": "Meh."}, htmx=True
    )
    assert "2.0 from 1 review" in again.text and "Handy summaries." not in again.text
    listed = await web.client.get("/v1/plugins", headers=web.api("alice"))
    summary = next(p for p in listed.json() if p["id"] == "summary")
    assert summary["user_review"]["score"] == 2 and summary["rating_count"] == 1


async def test_others_reviews_are_anonymous(web: Site) -> None:
    body = {"score": 5, "review": "Love it"}
    bob = await web.client.post(
        "/v1/plugins/review", params={"plugin_id": "summary"}, json=body, headers=web.api("bob")
    )
    assert bob.status_code == 200
    html = (await web.client.get("/plugins/summary")).text
    assert "5.0 from 1 review" in html and "Love it" in html
    assert ">Someone · <time" in unescape(html) and "bob" not in html
    assert "Write a review" in html  # alice has not written one


async def test_a_review_needs_a_score_from_1_to_5(web: Site) -> None:
    for score in ("0", "6", "", "three"):
        response = await post_form(web.client, "/plugins/summary/review", {"score": score}, htmx=True)
        assert response.status_code == 400, score
    too_long = await post_form(
        web.client, "/plugins/summary/review", {"score": "3", "review": "x" * 5_001}, htmx=True
    )
    assert too_long.status_code == 400
    listed = await web.client.get("/v1/plugins", headers=web.api("alice"))
    assert next(p for p in listed.json() if p["id"] == "summary")["rating_count"] == 0


async def test_forms_without_the_csrf_token_are_refused(web: Site) -> None:
    for path, data in (
        ("/plugins/summary/enabled", {"enabled": "true"}),
        ("/plugins/summary/review", {"score": "5"}),
    ):
        assert (await web.client.post(path, data=data)).status_code == 403
        forged = await web.client.post(path, data=data, headers={**HTMX, "X-CSRFToken": "0" * 128})
        assert forged.status_code == 403
    assert await enabled_ids(web, "alice") == set()
    listed = await web.client.get("/v1/plugins", headers=web.api("alice"))
    assert all(p["rating_count"] == 0 for p in listed.json())


async def test_hostile_names_reviews_and_urls_are_escaped(web: Site) -> None:
    body = {"score": 1, "review": '</textarea><script>alert("review")</script>'}
    await web.client.post(
        "/v1/plugins/review", params={"plugin_id": "hostile"}, json=body, headers=web.api("bob")
    )
    await web.client.post(
        "/v1/plugins/review", params={"plugin_id": "hostile"}, json=body, headers=web.api("alice")
    )
    for path in ("/plugins", "/plugins/hostile"):
        html = (await web.client.get(path)).text
        assert "<script>alert" not in html and "<b>Mallory</b>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;Mallory&lt;/b&gt;" in html
        assert "javascript:" not in html.replace("<code>javascript:alert(4)</code>", "")
        assert "&lt;/textarea&gt;&lt;script&gt;alert(&#34;review&#34;)&lt;/script&gt;" in html
        assert html.count("<script") == html.count("<script src=")
    card = (await web.client.get("/plugins/hostile", headers=HTMX)).text
    assert '<span class="icon letter" aria-hidden="true">&lt;</span>' in card  # no javascript: image
    assert "Setup instructions: <code>javascript:alert(4)</code>" in card  # shown, not linked


async def test_the_setup_check_refuses_private_addresses_unless_allowed(
    tmp_path: Path, embedder: MiniLMEmbedder, static_server: StaticServer
) -> None:
    path = tmp_path / "community-plugins.json"
    path.write_text(json.dumps(catalogue(static_server)), encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "data", plugins_catalogue=str(path))
    async for site in started(settings, embedder, "http://testserver.local"):
        assert (await sign_in(site.client, site.tokens["alice"])).status_code == 303
        response = await post_form(site.client, "/plugins/ready/enabled", {"enabled": "true"}, htmx=True)
        assert response.status_code == 422
        assert "Not enabled: Plugin setup cannot be checked: its URL is refused" in unescape(response.text)
        assert static_server.queries("/setup/yes") == []

"""Security headers, CSRF, and the API left token-only beside the pages."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest
from litestar.middleware.csrf import generate_csrf_hash

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.web.security import CONTENT_SECURITY_POLICY, CSRF_SECRET_KEY, load_csrf_secret
from tests.web.conftest import HTMX, Site, csrf_token, memory, post_form, started

pytestmark = pytest.mark.anyio

BODY = {
    "started_at": "2026-11-23T09:00:00Z",
    "finished_at": "2026-11-23T09:05:00Z",
    "transcript_segments": [
        {"text": "We should book the train tickets to Lyon tonight.", "speaker": "SPEAKER_0"}
    ],
}


def _assert_security_headers(headers: httpx.Headers) -> None:
    csp = headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "same-origin"
    assert headers.get("x-frame-options") == "DENY"


async def test_every_page_carries_the_security_headers(web: Site) -> None:
    await web.services.store.put("alice", memory("m1"))
    for path in ("/", "/memories/m1", "/memories/m1/edit", "/memories/nope", "/?category=nonsense"):
        response = await web.client.get(path)
        _assert_security_headers(response.headers)
        assert response.headers["cache-control"] == "no-store"
        assert "HX-Request" in response.headers["vary"]
    fragment = await web.client.get("/", headers=HTMX)
    _assert_security_headers(fragment.headers)


async def test_the_sign_in_page_and_static_files_carry_them_too(anonymous: Site) -> None:
    _assert_security_headers((await anonymous.client.get("/login")).headers)
    static = await anonymous.client.get("/static/app.css")
    _assert_security_headers(static.headers)
    assert "max-age=31536000" in static.headers["cache-control"]


async def test_pages_have_no_inline_script(web: Site) -> None:
    await web.services.store.put("alice", memory("m1"))
    for path in ("/", "/memories/m1"):
        html = (await web.client.get(path)).text
        assert html.count("<script") == html.count("<script src=")
        assert " on" + "click=" not in html and "hx-on" not in html and "style=" not in html


async def test_htmx_comes_from_the_npm_package(anonymous: Site) -> None:
    page = (await anonymous.client.get("/login")).text
    assert '<script src="/static/vendor/htmx.min.js?v=' in page
    response = await anonymous.client.get("/static/vendor/htmx.min.js")
    assert response.status_code == 200, "htmx is missing: run `make install` (npm ci)"
    assert response.headers["content-type"].startswith("text/javascript")
    assert 'version:"2.' in response.text


async def test_a_form_post_without_the_csrf_token_is_refused(web: Site) -> None:
    await web.services.store.put("alice", memory("m1"))
    response = await web.client.post("/memories/m1/discard", data={})
    assert response.status_code == 403
    forged = await web.client.post("/memories/m1/discard", data={"_csrf_token": "0" * 128})
    assert forged.status_code == 403
    htmx = await web.client.post("/memories/m1/discard", headers={**HTMX, "X-CSRFToken": "nope"})
    assert htmx.status_code == 403
    stored = await web.services.store.get("alice", "m1")
    assert stored is not None and not stored.discarded


async def test_sign_in_and_sign_out_need_the_csrf_token(web: Site) -> None:
    assert (await web.client.post("/logout")).status_code == 403
    login = await web.client.post("/login", data={"token": web.tokens["bob"]})
    assert login.status_code == 403


async def test_the_token_in_the_header_or_the_form_is_accepted(web: Site) -> None:
    await web.services.store.put("alice", memory("m1"))
    assert (await post_form(web.client, "/memories/m1/discard", htmx=True)).status_code == 200
    response = await post_form(web.client, "/memories/m1/restore")
    assert response.status_code == 200  # followed the redirect back to the page
    assert str(response.url).endswith("/memories/m1")


async def test_the_body_carries_the_token_for_htmx(web: Site) -> None:
    token = await csrf_token(web.client, "/")
    page = (await web.client.get("/")).text
    assert f"""hx-headers='{{"x-csrftoken": "{token}"}}'""" in page


async def test_the_api_stays_token_only(web: Site) -> None:
    """With the session and CSRF cookies in the jar, the API takes neither and needs neither."""
    assert web.client.cookies.get("omi_session") and web.client.cookies.get("omi_csrf")
    created = await web.client.post("/v1/memories", json=BODY, headers=web.api("alice"))
    assert created.status_code == 200, created.text
    assert "set-cookie" not in created.headers
    assert "content-security-policy" not in created.headers
    listed = await web.client.get("/v1/memories")
    assert listed.status_code == 401  # a session cookie is not an API credential
    assert listed.headers["content-type"].startswith("application/json")
    assert (await web.client.get("/health")).json() == {"status": "ok"}


async def test_errors_are_pages_with_escaped_details(web: Site) -> None:
    response = await web.client.get("/?category=<script>alert(1)</script>")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;" in response.text
    htmx = await web.client.get("/memories/nope", headers=HTMX)
    assert htmx.status_code == 404 and htmx.headers["content-type"].startswith("text/plain")


async def test_the_csrf_secret_is_kept_in_the_key_value_port(web: Site) -> None:
    """Generated once and shared, so tokens survive a restart and work on every instance."""
    stored = await web.services.kv.get(CSRF_SECRET_KEY)
    assert stored is not None
    secret = msgspec.json.decode(stored, type=str)
    token = await csrf_token(web.client, "/")
    assert generate_csrf_hash(token[:64], secret) == token[64:]
    assert await load_csrf_secret(web.services.kv) == secret


async def test_a_configured_csrf_secret_is_used_as_it_is(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    settings = Settings(data_dir=tmp_path / "data", web_secret="s3cret-from-the-environment")
    async for site in started(settings, embedder, "http://testserver.local"):
        token = await csrf_token(site.client)
        assert generate_csrf_hash(token[:64], "s3cret-from-the-environment") == token[64:]
        assert await site.services.kv.get(CSRF_SECRET_KEY) is None

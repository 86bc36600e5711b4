"""Sign-in with a user token into a server-side session, sign-out, and who may see pages."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.tokens import TokenService
from app.web.auth import safe_next
from tests.web.conftest import HTMX, Site, csrf_token, sign_in, started

pytestmark = pytest.mark.anyio


def _cookie(response_headers: list[str], name: str) -> str:
    found = [c for c in response_headers if c.startswith(f"{name}=")]
    assert len(found) == 1, response_headers
    return found[0]


async def test_a_visitor_without_a_session_is_sent_to_sign_in(anonymous: Site) -> None:
    response = await anonymous.client.get("/memories/abc?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fmemories%2Fabc%3Fx%3D1"
    assert "omi_session" not in response.headers.get("set-cookie", "")


async def test_an_htmx_request_without_a_session_navigates_to_sign_in(anonymous: Site) -> None:
    headers = {**HTMX, "HX-Current-URL": "http://testserver.local/memories/abc"}
    response = await anonymous.client.get("/", headers=headers, follow_redirects=False)
    assert response.headers["HX-Redirect"] == "/login?next=%2Fmemories%2Fabc"


async def test_the_sign_in_page_sets_no_session(anonymous: Site) -> None:
    response = await anonymous.client.get("/login")
    assert response.status_code == 200
    assert 'name="token"' in response.text and 'type="password"' in response.text
    assert "omi_session" not in response.headers.get("set-cookie", "")
    assert await anonymous.services.kv.keys("web:sessions:") == []


async def test_sign_in_with_a_token_starts_a_session(anonymous: Site) -> None:
    response = await sign_in(anonymous.client, anonymous.tokens["alice"], next_url="/memories/x")
    assert response.status_code == 303
    assert response.headers["location"] == "/memories/x"
    cookie = _cookie(response.headers.get_list("set-cookie"), "omi_session")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # plain http
    page = await anonymous.client.get("/")
    assert page.status_code == 200 and "Signed in as alice" in page.text


async def test_the_store_holds_neither_the_session_id_nor_the_token(anonymous: Site) -> None:
    response = await sign_in(anonymous.client, anonymous.tokens["alice"])
    session_id = _cookie(response.headers.get_list("set-cookie"), "omi_session").split(";")[0].split("=")[1]
    [key] = await anonymous.services.kv.keys("web:sessions:")
    assert key == "web:sessions:" + hashlib.sha256(session_id.encode()).hexdigest()
    stored = await anonymous.services.kv.get(key)
    assert stored is not None and anonymous.tokens["alice"] not in stored and session_id not in stored


async def test_a_wrong_token_is_refused(anonymous: Site) -> None:
    response = await sign_in(anonymous.client, "omi_not-a-token")
    assert response.status_code == 400
    assert "That token is not valid" in response.text
    assert "omi_session" not in response.headers.get("set-cookie", "")
    assert (await anonymous.client.get("/", follow_redirects=False)).status_code == 303


async def test_sign_in_goes_only_to_pages_of_this_site(anonymous: Site) -> None:
    response = await sign_in(anonymous.client, anonymous.tokens["alice"], next_url="//evil.example/x")
    assert response.headers["location"] == "/"
    assert safe_next("https://evil.example/") == "/"
    assert safe_next("/\\evil.example") == "/"
    assert safe_next("/memories/1?q=a") == "/memories/1?q=a"


async def test_sign_in_replaces_a_planted_session_id(anonymous: Site) -> None:
    anonymous.client.cookies.set("omi_session", "planted-by-someone-else")
    response = await sign_in(anonymous.client, anonymous.tokens["alice"])
    cookie = _cookie(response.headers.get_list("set-cookie"), "omi_session")
    assert "planted-by-someone-else" not in cookie


async def test_signing_in_again_rotates_the_session(web: Site) -> None:
    before = web.client.cookies["omi_session"]
    await sign_in(web.client, web.tokens["bob"])
    assert web.client.cookies["omi_session"] != before
    assert len(await web.services.kv.keys("web:sessions:")) == 1  # the old one is gone
    assert "Signed in as bob" in (await web.client.get("/")).text


async def test_pages_do_not_rewrite_an_unchanged_session(web: Site) -> None:
    response = await web.client.get("/")
    assert "omi_session" not in response.headers.get("set-cookie", "")


async def test_sign_out_ends_the_session_for_good(web: Site) -> None:
    old_cookie = web.client.cookies["omi_session"]
    token = await csrf_token(web.client, "/")
    response = await web.client.post("/logout", data={"_csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert "omi_session=null" in response.headers["set-cookie"]
    assert await web.services.kv.keys("web:sessions:") == []
    web.client.cookies.set("omi_session", old_cookie)  # a copied cookie does not come back to life
    assert (await web.client.get("/", follow_redirects=False)).status_code == 303


async def test_revoking_the_token_signs_its_sessions_out(web: Site) -> None:
    assert (await web.client.get("/", follow_redirects=False)).status_code == 200
    await TokenService(web.services.kv).revoke("alice", web.tokens["alice"])
    assert (await web.client.get("/", follow_redirects=False)).status_code == 303


async def test_the_sign_in_page_forwards_a_signed_in_user(web: Site) -> None:
    response = await web.client.get("/login?next=/memories/1", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/memories/1"


@pytest.fixture
async def over_https(settings: Settings, embedder: MiniLMEmbedder) -> AsyncIterator[Site]:
    async for site in started(settings, embedder, "https://testserver.local"):
        yield site


async def test_cookies_are_secure_over_https(over_https: Site) -> None:
    login = await over_https.client.get("/login")
    assert "secure" in _cookie(login.headers.get_list("set-cookie"), "omi_csrf").lower()
    response = await sign_in(over_https.client, over_https.tokens["alice"])
    assert "secure" in _cookie(response.headers.get_list("set-cookie"), "omi_session").lower()


@pytest.fixture
async def forced_secure(tmp_path: Path, embedder: MiniLMEmbedder) -> AsyncIterator[Site]:
    settings = Settings(data_dir=tmp_path / "data", web_secure_cookies=True)
    async for site in started(settings, embedder, "http://testserver.local"):
        yield site


async def test_secure_cookies_can_be_forced(forced_secure: Site) -> None:
    response = await forced_secure.client.get("/login")
    assert "secure" in _cookie(response.headers.get_list("set-cookie"), "omi_csrf").lower()

"""``/settings``: the speech profile upload and the integration keys (shown once)."""

from __future__ import annotations

import io
import re
import wave

import httpx
import pytest

from app.core.speech_profile import duration_key
from app.core.tokens import token_digest
from integrations.common import integration_keys
from tests.web.conftest import HTMX, Site, csrf_token

pytestmark = pytest.mark.anyio

_KEY = re.compile(r"omi_ik_[A-Za-z0-9_-]{20,}")
_FINGERPRINT = re.compile(r'action="/settings/keys/([0-9a-f]{12})/revoke"')


def wav(seconds: float, rate: int = 16_000, channels: int = 1) -> bytes:
    """A WAV of a quiet hum."""
    frames = int(seconds * rate)
    sample = (800).to_bytes(2, "little", signed=True) + (-800).to_bytes(2, "little", signed=True)
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(sample * (frames * channels // 2))
    return out.getvalue()


async def upload(web: Site, data: bytes, *, htmx: bool = True, token: str | None = None) -> httpx.Response:
    token = token if token is not None else await csrf_token(web.client, "/settings")
    files = {"file": ("me.wav", data, "audio/wav")}
    if htmx:
        headers = {**HTMX, "X-CSRFToken": token}
        return await web.client.post("/settings/speech-profile", files=files, headers=headers)
    return await web.client.post(
        "/settings/speech-profile", files=files, data={"_csrf_token": token}, follow_redirects=False
    )


async def create_key(web: Site) -> str:
    token = await csrf_token(web.client, "/settings")
    response = await web.client.post("/settings/keys", headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 201, response.text
    match = _KEY.search(response.text)
    assert match, response.text
    return match.group(0)


async def test_the_page_shows_the_profile_and_keys_sections(web: Site) -> None:
    response = await web.client.get("/settings")
    assert response.status_code == 200
    html = response.text
    assert "<title>Settings · omi</title>" in html and 'aria-current="page">Settings' in html
    assert 'id="speech-profile"' in html and "You have no speech profile yet." in html
    assert 'enctype="multipart/form-data"' in html and 'hx-encoding="multipart/form-data"' in html
    assert 'id="keys"' in html and "You have no integration keys." in html
    assert html.count('name="_csrf_token"') >= 3  # sign-out, upload, create key


async def test_a_profile_upload_is_stored_as_the_api_stores_it(web: Site) -> None:
    response = await upload(web, wav(6.5))
    assert response.status_code == 200, response.text
    fragment = response.text
    assert fragment.lstrip().startswith('<section id="speech-profile"') and "<html" not in fragment
    assert "Your speech profile is saved." in fragment and "<strong>6.5 seconds</strong>" in fragment
    api = await web.client.get("/v3/speech-profile", headers=web.api("alice"))
    assert api.json() == {"has_profile": True}
    assert await web.services.kv.get(duration_key("alice")) == "6.500"
    assert (await web.client.get("/v3/speech-profile", headers=web.api("bob"))).json() == {
        "has_profile": False
    }
    page = (await web.client.get("/settings")).text
    assert (
        "You have a speech profile of <strong>6.5 seconds</strong>." in page and "Replace the profile" in page
    )


async def test_a_plain_upload_redirects_back(web: Site) -> None:
    response = await upload(web, wav(5.0), htmx=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/settings#speech-profile"
    assert await web.services.kv.get(duration_key("alice")) == "5.000"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (wav(2.0), "must last 5 to 120 seconds, not 2.0"),
        (wav(6.0, rate=8_000), "must be sampled at 16000 Hz, not 8000 Hz"),
        (wav(6.0, channels=2), "must be mono, not 2 channels"),
        (b"not a wav at all", "not a PCM WAV file"),
        (b"", "not a PCM WAV file"),
    ],
)
async def test_a_profile_that_does_not_fit_comes_back_with_the_reason(
    web: Site, data: bytes, reason: str
) -> None:
    response = await upload(web, data)
    assert response.status_code == 422
    text = response.text
    assert text.lstrip().startswith('<section id="speech-profile"') and reason in text
    assert 'role="alert">Not saved:' in text
    plain = await upload(web, data, htmx=False)
    assert plain.status_code == 422 and reason in plain.text
    assert await web.services.kv.get(duration_key("alice")) is None


async def test_a_new_key_is_shown_once_and_works(web: Site) -> None:
    key = await create_key(web)
    assert await integration_keys(web.services.kv).resolve(key) == "alice"
    page = (await web.client.get("/settings")).text
    assert key not in page and "omi_ik_" not in page
    digest = token_digest(key)
    assert digest not in page  # only a short fingerprint of the hash
    assert _FINGERPRINT.findall(page) == [digest[:12]]
    fragment = (await web.client.get("/settings", headers=HTMX)).text
    assert key not in fragment


async def test_a_plain_post_gets_the_whole_page_with_the_key(web: Site) -> None:
    token = await csrf_token(web.client, "/settings")
    response = await web.client.post("/settings/keys", data={"_csrf_token": token}, follow_redirects=False)
    assert response.status_code == 201 and "<html" in response.text
    assert response.headers["cache-control"] == "no-store"
    match = _KEY.search(response.text)
    assert match and "shown this once" in response.text
    assert await integration_keys(web.services.kv).resolve(match.group(0)) == "alice"


async def test_keys_are_listed_newest_first_and_revoked(web: Site) -> None:
    first, second = await create_key(web), await create_key(web)
    page = (await web.client.get("/settings")).text
    fingerprints = _FINGERPRINT.findall(page)
    assert len(fingerprints) == 2 and set(fingerprints) == {token_digest(k)[:12] for k in (first, second)}
    token = await csrf_token(web.client, "/settings")
    fingerprint = token_digest(first)[:12]
    response = await web.client.post(
        f"/settings/keys/{fingerprint}/revoke", headers={**HTMX, "X-CSRFToken": token}
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="keys"') and fingerprint not in response.text
    keys = integration_keys(web.services.kv)
    assert await keys.resolve(first) is None and await keys.resolve(second) == "alice"
    again = await web.client.post(
        f"/settings/keys/{fingerprint}/revoke", headers={**HTMX, "X-CSRFToken": token}
    )
    assert again.status_code == 404


async def test_another_users_key_cannot_be_revoked(web: Site) -> None:
    bobs = await integration_keys(web.services.kv).create("bob")
    token = await csrf_token(web.client, "/settings")
    fingerprint = token_digest(bobs)[:12]
    response = await web.client.post(
        f"/settings/keys/{fingerprint}/revoke", headers={**HTMX, "X-CSRFToken": token}
    )
    assert response.status_code == 404
    assert await integration_keys(web.services.kv).resolve(bobs) == "bob"
    assert fingerprint not in (await web.client.get("/settings")).text
    for bad in ("nothex000000", "abc", "0" * 64):
        response = await web.client.post(
            f"/settings/keys/{bad}/revoke", headers={**HTMX, "X-CSRFToken": token}
        )
        assert response.status_code in (400, 404), bad


async def test_settings_forms_without_the_csrf_token_are_refused(web: Site) -> None:
    key = await integration_keys(web.services.kv).create("alice")
    fingerprint = token_digest(key)[:12]
    refused = [
        await upload(web, wav(6.0), htmx=False, token=""),
        await upload(web, wav(6.0), token="nope"),
        await web.client.post("/settings/keys", data={}),
        await web.client.post(f"/settings/keys/{fingerprint}/revoke", data={}),
        await web.client.post(
            f"/settings/keys/{fingerprint}/revoke", headers={**HTMX, "X-CSRFToken": "0" * 128}
        ),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert await web.services.kv.get(duration_key("alice")) is None
    assert await integration_keys(web.services.kv).count("alice") == 1


async def test_the_settings_page_needs_a_session(anonymous: Site) -> None:
    response = await anonymous.client.get("/settings", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fsettings"
    for path in ("/live", "/plugins", "/live/events"):
        response = await anonymous.client.get(path, follow_redirects=False)
        assert response.status_code == 303, path

"""Plugins' own pages: ``register_pages`` and ``templates_dir``, templates named ``plugins/<name>/``."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateNotFound
from litestar.testing import AsyncTestClient

import tests.web.greeter_plugin as greeter
from app.backends.minilm_embedder import MiniLMEmbedder
from app.config import Settings
from app.core.tokens import TokenService
from app.main import create_app
from app.plugins import hookimpl
from app.plugins.host import PluginHost
from app.plugins.manager import PluginLoad, new_plugin_manager, register_plugin
from app.web.rendering import Assets, environment, folder_loader, safe_url
from tests.web.conftest import HTMX, Site, csrf_token, post_form, sign_in, web_services

pytestmark = pytest.mark.anyio


def plugins(**named: object) -> PluginLoad:
    pm = new_plugin_manager()
    for name, plugin in named.items():
        register_plugin(pm, plugin, name)
    return PluginLoad(pm=pm, loaded=list(named), failures=[])


async def site_with(settings: Settings, embedder: MiniLMEmbedder, load: PluginLoad) -> AsyncIterator[Site]:
    services = web_services(settings.data_dir, embedder)
    app = create_app(settings, services=services, plugins=load)
    async with AsyncTestClient(app=app, base_url="http://testserver.local") as client:
        tokens = {uid: await TokenService(services.kv).create(uid) for uid in ("alice", "bob")}
        yield Site(app=app, client=client, services=services, tokens=tokens)


@pytest.fixture
async def greeting(settings: Settings, embedder: MiniLMEmbedder) -> AsyncIterator[Site]:
    """A site whose only plugin is the greeter, signed in as alice."""
    async for site in site_with(settings, embedder, plugins(greeter=greeter)):
        assert (await sign_in(site.client, site.tokens["alice"])).status_code == 303
        yield site


async def test_a_plugin_page_renders_its_own_template_in_the_layout(greeting: Site) -> None:
    response = await greeting.client.get("/greeter")
    assert response.status_code == 200, response.text
    html = response.text
    assert html.startswith("<!doctype html>") and "<title>Greeter · omi</title>" in html
    assert '<p class="greeting">Hello alice!</p>' in html
    assert 'href="/plugins"' in html and "Sign out" in html  # the server's layout
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    fragment = await greeting.client.get("/greeter", headers=HTMX)
    assert fragment.text.lstrip().startswith('<section id="hello">')


async def test_a_plugin_page_form_has_csrf_and_answers_htmx_or_redirects(greeting: Site) -> None:
    response = await post_form(greeting.client, "/greeter/wave", {"to": "<b>bob</b>"}, htmx=True)
    assert response.status_code == 200
    assert "you waved to &lt;b&gt;bob&lt;/b&gt;!" in response.text
    token = await csrf_token(greeting.client, "/greeter")
    plain = await greeting.client.post(
        "/greeter/wave", data={"to": "bob", "_csrf_token": token}, follow_redirects=False
    )
    assert plain.status_code == 303 and plain.headers["location"] == "/greeter"
    refused = await greeting.client.post("/greeter/wave", data={"to": "bob"})
    assert refused.status_code == 403


async def test_a_plugin_page_needs_a_session(settings: Settings, embedder: MiniLMEmbedder) -> None:
    async for site in site_with(settings, embedder, plugins(greeter=greeter)):
        response = await site.client.get("/greeter", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fgreeter"


async def test_a_plugins_templates_cannot_shadow_the_servers(greeting: Site) -> None:
    for path in ("/", "/greeter", "/plugins"):
        assert "SHADOWED" not in (await greeting.client.get(path)).text
    env = environment(Assets(), {"greeter": folder_loader(greeter.TEMPLATES)})
    assert "SHADOWED" in env.get_template("plugins/greeter/base.html").render()
    for name in (
        "plugins/greeter/../index.html",
        "plugins/greeter/../../login.html",
        "plugins/other/index.html",
    ):
        with pytest.raises(TemplateNotFound):
            env.get_template(name)


def test_templates_are_read_from_a_zipped_package(tmp_path: Path) -> None:
    archive = tmp_path / "plugin.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zipped_plugin/templates/page.html", "{{ 1 + 1 }} from a zip")
    folder = zipfile.Path(archive, "zipped_plugin/templates/")
    env = environment(Assets(), {"zipped": folder_loader(folder)})
    assert env.get_template("plugins/zipped/page.html").render() == "2 from a zip"
    with pytest.raises(TemplateNotFound):
        env.get_template("plugins/zipped/missing.html")


class BrokenPages:
    """A plugin whose page hooks go wrong in every way the host should survive."""

    @hookimpl
    def register_pages(self) -> Any:
        return "not a list"

    @hookimpl
    def templates_dir(self) -> Any:
        return "/nonexistent/templates"


class RaisingPages:
    @hookimpl
    def register_pages(self) -> Any:
        raise RuntimeError("boom")


def test_broken_page_hooks_are_recorded_not_raised() -> None:
    load = plugins(broken=BrokenPages(), raising=RaisingPages(), greeter=greeter)
    host = PluginHost(load.pm, timeout=1.0)
    assert [getattr(p, "path", None) for p in host.pages()] == ["/greeter"]
    assert list(host.template_dirs()) == ["greeter"]
    assert [e.message for e in host.errors("broken")] == [
        "returned str, not a list",
        "'/nonexistent/templates' is not a folder",
    ]
    assert host.errors("raising")[0].message == "RuntimeError: boom"
    host.close()


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://example.org/a.png", True),
        ("http://example.org/a.png", True),
        ("/static/app.css", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("//evil.example/x", False),
        ("https://", False),
        ("https://a.b/\nx", False),
        ("/\\evil", False),
        ("plugins/instructions/README.md", False),
        ("", False),
    ],
)
def test_safe_url_keeps_only_web_urls_and_local_paths(url: str, kept: bool) -> None:
    assert safe_url(url) == (url if kept else "")

"""Templates and responses: the Jinja environment, static asset URLs, ``page`` and ``done``.

One handler serves a page in full or, for an htmx request, just the fragment that changes:
``page(request, "memories/list.html", "memories/_results.html", ...)``. A form handler
answers an htmx request with the fragment to swap in and a plain form post with a redirect
(Post/Redirect/Get): ``done(request, "/memories/1", "memories/_memory.html", ...)``. A form
the user must correct comes back with its error, as a 422 (``invalid``), which htmx swaps in
like a success (``responseHandling`` in ``base.html``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateNotFound,
    pass_context,
)
from jinja2.loaders import split_template_path
from litestar import Response
from litestar.connection import ASGIConnection
from litestar.plugins.htmx import HTMXRequest
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.base import csrf_token
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from app.core.models import CATEGORIES
from app.web.security import CSRF_HEADER

__all__ = [
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "USER_KEY",
    "Assets",
    "current_user",
    "done",
    "folder_loader",
    "invalid",
    "is_fragment_request",
    "page",
    "safe_url",
    "template_config",
]

log = logging.getLogger("omi_backend.web")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"
USER_KEY = "omi_web_uid"
"""Where the sign-in guard leaves the signed-in uid in the connection's state."""


class Assets:
    """URLs of our static files with a content hash, computed once at start-up.

    ``static("app.css")`` in a template gives ``/static/app.css?v=1f2e...``, so the static
    router can let browsers keep the files for a year.
    """

    def __init__(self, root: Path = STATIC_DIR, prefix: str = STATIC_PATH) -> None:
        self.prefix = prefix
        self._urls = {
            path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    def has(self, name: str) -> bool:
        """Whether ``name`` is in the static folder."""
        return name in self._urls

    def url(self, name: str) -> str:
        """The URL of ``name`` (a path under the static folder)."""
        version = self._urls.get(name)
        if version is None:
            log.warning("static file %s is missing (for htmx: run `make install`)", name)
            version = self._urls[name] = "missing"
        return f"{self.prefix}/{name}?v={version}"


def current_user(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The signed-in uid, once the sign-in guard has run."""
    uid = connection.state.get(USER_KEY)
    return uid if isinstance(uid, str) else None


def _when(value: datetime) -> str:
    """A datetime for people, in UTC (the page's script shows it in the browser's time zone)."""
    return value.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")


def _clock(seconds: float) -> str:
    """Seconds into a conversation as ``m:ss`` or ``h:mm:ss``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _iso(value: datetime) -> str:
    return value.isoformat()


def safe_url(value: object) -> str:
    """``value`` when it is an http(s) URL or a path on this site, else ``""``: what may go in
    an ``href`` or ``src`` that came from outside (a plugin catalogue), never ``javascript:``."""
    if not isinstance(value, str):
        return ""
    url = value.strip()
    if any(ord(c) < 32 for c in url) or "\\" in url:
        return ""
    lowered = url.lower()
    if lowered.startswith(("https://", "http://")) and len(url) > len("https://"):
        return url
    if url.startswith("/") and not url.startswith("//"):
        return url
    return ""


class _FolderLoader(BaseLoader):
    """Templates from an ``importlib.resources`` folder (a package's, even inside a zip)."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        node = self.root
        for piece in split_template_path(template):  # refuses ".." (TemplateNotFound)
            node = node / piece
        if not node.is_file():
            raise TemplateNotFound(template)
        return node.read_text(encoding="utf-8"), None, lambda: True


def folder_loader(folder: Traversable) -> BaseLoader:
    """A Jinja loader of the templates in ``folder`` (a path, or a package's resources)."""
    if isinstance(folder, Path):
        return FileSystemLoader(folder)
    return _FolderLoader(folder)


@pass_context
def _csrf_field(context: Mapping[str, Any]) -> Markup:
    """The hidden input that carries the CSRF token in a plain form post."""
    return Markup('<input type="hidden" name="_csrf_token" value="{}">').format(csrf_token(context))


def environment(assets: Assets, plugin_loaders: Mapping[str, BaseLoader] | None = None) -> Environment:
    """The Jinja environment: autoescaping everywhere, undefined names are errors.

    Templates are compiled once and kept (no file checks per request). A plugin's templates,
    given in ``plugin_loaders``, are named ``plugins/<plugin name>/<template>``.
    """
    loaders: list[BaseLoader] = [FileSystemLoader(TEMPLATES_DIR)]
    if plugin_loaders:
        loaders.append(PrefixLoader({"plugins": PrefixLoader(dict(plugin_loaders))}))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=True,
        undefined=StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        static=assets.url, categories=CATEGORIES, csrf_header=CSRF_HEADER, csrf_field=_csrf_field
    )
    env.filters.update(when=_when, clock=_clock, iso=_iso, safe_url=safe_url)
    return env


def template_config(env: Environment) -> TemplateConfig[JinjaTemplateEngine]:
    """Litestar's template configuration over ``env`` (Litestar adds ``csrf_token()``, ``url_for()``)."""
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def is_fragment_request(request: HTMXRequest) -> bool:
    """An htmx request that wants a fragment (a history restore wants the whole page)."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def page(
    request: HTMXRequest,
    full: str,
    fragment: str | None = None,
    *,
    status_code: int = 200,
    **context: Any,
) -> Template:
    """``full`` for a browser's request, ``fragment`` (when given) for an htmx one."""
    name = fragment if fragment is not None and is_fragment_request(request) else full
    context.setdefault("user", current_user(request))
    context.setdefault("section", None)
    return Template(template_name=name, context=context, status_code=status_code)


def invalid(request: HTMXRequest, full: str, fragment: str, **context: Any) -> Template:
    """A form to correct, with its error: ``full`` or (htmx) ``fragment``, as a 422."""
    return page(request, full, fragment, status_code=422, **context)


def done(
    request: HTMXRequest, redirect_to: str, fragment: str | None = None, **context: Any
) -> Template | Response[Any]:
    """After a form post: the fragment to swap in (htmx), else a 303 redirect to ``redirect_to``.

    Without a ``fragment``, htmx is told to load ``redirect_to`` as a whole page.
    """
    if is_fragment_request(request):
        if fragment is None:
            return Response(content=b"", headers={"HX-Redirect": redirect_to})
        return page(request, fragment, fragment, **context)
    return Redirect(redirect_to, status_code=303)

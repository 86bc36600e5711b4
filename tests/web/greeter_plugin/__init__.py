"""A tiny plugin that ships its own web page and templates (for the plugin-pages tests)."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import URLEncodedBody
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Template

from app.plugins import done, hookimpl, page

TEMPLATES: Traversable = files(__package__) / "templates"


class Wave(msgspec.Struct):
    to: str = ""


class GreeterPage(Controller):
    path = "/greeter"

    @get("")
    async def greeter(self, request: HTMXRequest, uid: NamedDependency[str]) -> Template:
        return page(request, "plugins/greeter/index.html", "plugins/greeter/_hello.html", name=uid, waved="")

    @post("/wave", status_code=200)
    async def wave(
        self, request: HTMXRequest, data: URLEncodedBody[Wave], uid: NamedDependency[str]
    ) -> Template | Response[Any]:
        return done(request, "/greeter", "plugins/greeter/_hello.html", name=uid, waved=data.to)


@hookimpl
def register_pages() -> list[Any]:
    return [GreeterPage]


@hookimpl
def templates_dir() -> Traversable:
    return TEMPLATES

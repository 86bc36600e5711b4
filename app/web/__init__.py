"""The web pages: server-rendered Jinja2 templates enhanced with htmx.

One module per page family (``memories.py`` the list and search, ``memory.py`` one memory,
``plugins.py`` the catalogue and reviews, ``settings.py`` the speech profile and integration
keys, ``live.py`` live transcripts, ``auth.py`` sign-in), templates in
``templates/<family>/``, our CSS and JS in ``static/`` (htmx and its SSE extension come from
the npm packages ``htmx.org`` and ``htmx-ext-sse``, copied to ``static/vendor/`` by ``make
install``). :func:`build_web` puts them, and the pages plugins add (``register_pages``, with
templates named ``plugins/<name>/...`` from their ``templates_dir``), behind one router that
brings the sign-in guard, the server-side session, CSRF checks, security headers and HTML
error pages. A form the user must correct comes back with its error as a 422
(``rendering.invalid``), which htmx swaps in.

Adding a page (say ``/settings``):

1. ``app/web/settings.py``: a ``Controller`` whose handlers take ``request: HTMXRequest``
   and ``uid: NamedDependency[str]`` (the signed-in user) plus ``services`` or ``pipeline``
   as needed, and return ``page(request, "settings/index.html", "settings/_keys.html",
   section="settings", ...)``: the full page, or the fragment for an htmx request.
2. ``templates/settings/index.html`` extends ``base.html`` (fill ``title`` and ``content``)
   and includes its partials, ``templates/settings/_keys.html``, which are also served alone.
   Forms carry ``{{ csrf_field() }}``; htmx requests send the token from ``<body hx-headers>``.
3. Form posts answer with ``done(request, "/settings", "settings/_keys.html", ...)``: the
   fragment for htmx, a 303 redirect back for a plain post.
4. Add the controller to :data:`app.web.site.PAGES`. Pages need a signed-in user unless a
   handler (or controller) sets ``opt={"public": True}``. The nav in ``base.html`` links
   ``/``, ``/live``, ``/plugins`` and ``/settings``; pass ``section=`` to highlight yours.
5. Tests in ``tests/web/``: the ``web`` fixture's client is signed in as alice; check the
   page, its fragment (``HX-Request: true``) and that bob gets a 404 for alice's things.
"""

from __future__ import annotations

from app.web.site import PAGES, Web, build_web

__all__ = ["PAGES", "Web", "build_web"]

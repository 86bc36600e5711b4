"""Every route of the app, classified for the isolation matrix (``test_isolation.py``).

The routes come from the app itself (:func:`route_keys`: ``"METHOD /path/{template}"`` for
each handler, ``"WS /listen"`` for the WebSocket), and each one must be in :data:`TABLE`:

- :class:`Owned`: the path (or the ``uid`` of ``/listen``) names alice's things: bob's calls
  must be refused with a 404 (so bob cannot tell whether they exist) or, for ``/listen``, a
  1008 close. Each call is filled with alice's ids from the :class:`World`.
- :class:`Scoped`: nothing per-user in the path: the route acts on the caller's own data (or
  on the shared plugin catalogue, whose per-user state is keyed by the caller). Bob calls it
  as shown and nothing of alice's may come back, nor change.
- :class:`Public`: no credentials and no user data (health, static files, the API schema).

A route the table does not know fails ``test_every_route_is_classified``: a new route joins
the matrix by being added here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar
from litestar.handlers.base import BaseRouteHandler
from litestar.routes import HTTPRoute, WebSocketRoute

__all__ = [
    "ANONYMOUS",
    "KEY",
    "TABLE",
    "TOKEN",
    "WEB",
    "WEB_SECOND",
    "Call",
    "Entry",
    "Owned",
    "Public",
    "Scoped",
    "World",
    "route_keys",
]

TOKEN = "bearer token"
KEY = "integration key"
WEB = "web session + CSRF token"
WEB_SECOND = "a second web session of bob's + CSRF token"
ANONYMOUS = "no credentials"


@dataclass(frozen=True)
class Call:
    """One request bob makes. ``method`` ``WS`` is a ``/listen`` attempt: ``url`` is its query
    string and ``headers`` its handshake headers. ``owner_sees``: alice gets a 2xx for the same
    call (checked for reads, to prove the id was a real one)."""

    method: str
    url: str
    expect: tuple[int, ...]
    json: Any = None
    form: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    htmx: bool = True
    owner_sees: bool = False


@dataclass
class World:
    """Alice's ids and both users' credentials (filled in by the test's set-up)."""

    tokens: dict[str, str]
    keys: dict[str, str]
    sessions: dict[str, str]
    memories: dict[str, str]  # kind -> alice's memory id
    fingerprint: str  # alice's integration key, as listed
    webhooks: dict[str, str]  # "queued" / "given_up" -> a delivery of alice's
    plugin: str = "notes"  # a catalogue entry with a webhook, enabled and reviewed by alice
    request_id: str = "trip-notes-1"  # the request_id of alice's screenpipe memory
    profile_wav: bytes = b""


Calls = Callable[[World], list[Call]]


@dataclass(frozen=True)
class Owned:
    credential: str
    calls: Calls


@dataclass(frozen=True)
class Scoped:
    credential: str
    reason: str
    calls: Calls


@dataclass(frozen=True)
class Public:
    reason: str
    calls: Calls


Entry = Owned | Scoped | Public

MEMORY = "/v1/memories/{memory_id:str}"
PAGE = "/memories/{memory_id:str}"


def _api_memories(method: str, suffix: str = "", **extra: Any) -> Calls:
    def calls(world: World) -> list[Call]:
        return [
            Call(
                method,
                f"/v1/memories/{memory_id}{suffix}",
                (404,),
                owner_sees=method == "GET" and kind != "deleted",
                **extra,
            )
            for kind, memory_id in world.memories.items()
        ]

    return calls


def _pages(method: str, suffix: str = "", form: Mapping[str, str] | None = None, *, owned: str = "") -> Calls:
    """Every memory of alice's in htmx form, and her kept memory as a plain browser request.
    ``owned``: the kinds of memory alice herself can read this way."""

    def calls(world: World) -> list[Call]:
        readable = set(owned.split()) if owned else {k for k in world.memories if k != "deleted"}
        found = [
            Call(
                method,
                f"/memories/{memory_id}{suffix}",
                (404,),
                form=form,
                owner_sees=method == "GET" and kind in readable,
            )
            for kind, memory_id in world.memories.items()
        ]
        kept = world.memories["kept"]
        return [*found, Call(method, f"/memories/{kept}{suffix}", (404,), form=form, htmx=False)]

    return calls


def _both(method: str, url: Callable[[World], list[str]], form: Mapping[str, str] | None = None) -> Calls:
    """htmx and plain forms of each URL."""

    def calls(world: World) -> list[Call]:
        return [Call(method, u, (404,), form=form, htmx=htmx) for u in url(world) for htmx in (True, False)]

    return calls


def _one(method: str, url: str, expect: int = 200, **extra: Any) -> Calls:
    return lambda world: [Call(method, url, (expect,), **extra)]


def _listen(world: World) -> list[Call]:
    """``/listen`` for alice's uid with each of bob's credentials, and with a bad token."""
    query = "codec=pcm16&sample_rate=16000&language=en&uid=alice"
    bob = world.tokens["bob"]
    return [
        Call("WS", query, (1008,), headers={"Authorization": f"Bearer {bob}"}),
        Call("WS", f"{query}&token={bob}", (1008,)),
        Call("WS", f"{query}&token={world.tokens['bad']}", (1008,)),
        Call("WS", query, (1008,), headers={"Cookie": f"omi_session={world.sessions['bob']}"}),
    ]


_SCHEMA = (
    "/schema",
    "/schema/elements",
    "/schema/oauth2-redirect.html",
    "/schema/openapi.json",
    "/schema/openapi.yaml",
    "/schema/openapi.yml",
    "/schema/rapidoc",
    "/schema/redoc",
    "/schema/swagger",
)
_CATALOGUE = "the plugin id is a catalogue entry shared by everyone; enabling and reviews are kept per caller"
_OWN = "the caller's own data: the uid comes from the credentials"

TABLE: dict[str, Entry] = {
    # --- the REST API (bearer token) ----------------------------------------------------------
    f"GET {MEMORY}": Owned(TOKEN, _api_memories("GET")),
    f"DELETE {MEMORY}": Owned(TOKEN, _api_memories("DELETE")),
    f"PATCH {MEMORY}": Owned(TOKEN, _api_memories("PATCH", json={"title": "bob was here"})),
    f"POST {MEMORY}/reprocess": Owned(TOKEN, _api_memories("POST", "/reprocess")),
    f"POST {MEMORY}/restore": Owned(TOKEN, _api_memories("POST", "/restore")),
    f"PATCH {MEMORY}/events": Owned(
        TOKEN, _api_memories("PATCH", "/events", json={"events_idx": [0], "values": [True]})
    ),
    f"PATCH {MEMORY}/visibility": Owned(TOKEN, _api_memories("PATCH", "/visibility?value=public")),
    "GET /v1/memories": Scoped(
        TOKEN, _OWN, lambda w: [Call("GET", "/v1/memories?include_discarded=true&limit=1000", (200,))]
    ),
    "POST /v1/memories": Scoped(
        TOKEN,
        _OWN,
        _one(
            "POST",
            "/v1/memories",
            json={
                "started_at": "2026-11-23T10:00:00Z",
                "finished_at": "2026-11-23T10:05:00Z",
                "transcript_segments": [
                    {
                        "text": "We should book the ferry to the island tonight and pack on Friday.",
                        "speaker": "SPEAKER_0",
                    }
                ],
            },
        ),
    ),
    "POST /v1/memories/search": Scoped(
        TOKEN,
        _OWN,
        _one("POST", "/v1/memories/search", json={"query": "ferry tickets to the island", "limit": 50}),
    ),
    "GET /v1/messages": Scoped(TOKEN, _OWN, _one("GET", "/v1/messages?limit=1000")),
    "POST /v1/messages": Scoped(
        TOKEN, _OWN, _one("POST", "/v1/messages", json={"text": "When does the ferry to the island leave?"})
    ),
    "GET /v1/plugins": Scoped(TOKEN, _CATALOGUE, _one("GET", "/v1/plugins")),
    "GET /v2/plugins": Scoped(TOKEN, _CATALOGUE, _one("GET", "/v2/plugins")),
    "POST /v1/plugins/enable": Scoped(TOKEN, _CATALOGUE, _one("POST", "/v1/plugins/enable?plugin_id=notes")),
    "POST /v1/plugins/disable": Scoped(
        TOKEN, _CATALOGUE, _one("POST", "/v1/plugins/disable?plugin_id=notes")
    ),
    "POST /v1/plugins/review": Scoped(
        TOKEN,
        _CATALOGUE,
        _one("POST", "/v1/plugins/review?plugin_id=notes", json={"score": 1, "review": "Not for me."}),
    ),
    "GET /v3/speech-profile": Scoped(TOKEN, _OWN, _one("GET", "/v3/speech-profile")),
    "POST /v3/upload-audio": Scoped(
        TOKEN,
        _OWN,
        lambda w: [
            Call("POST", "/v3/upload-audio", (200,), files={"file": ("bob.wav", w.profile_wav, "audio/wav")})
        ],
    ),
    "POST /v3/upload-bytes": Scoped(
        TOKEN, _OWN, _one("POST", "/v3/upload-bytes", 400, json={"bytes": [[1, 2, 3]], "duration": 10})
    ),
    "WS /listen": Owned(TOKEN, _listen),
    # --- the integrations (integration key) ---------------------------------------------------
    "POST /v1/integrations/workflow/memories": Scoped(
        KEY,
        _OWN + " (the key's)",
        _one("POST", "/v1/integrations/workflow/memories", json={"text": "Bob's packing list: socks."}),
    ),
    "GET /v1/integrations/workflow/memories": Scoped(
        KEY, _OWN + " (the key's)", _one("GET", "/v1/integrations/workflow/memories?limit=12")
    ),
    "POST /v1/integrations/screenpipe": Scoped(
        KEY,
        _OWN + " (the key's); the memory id is derived from the uid and the request_id, so alice's "
        "request_id makes bob a memory of his own",
        lambda w: [
            Call(
                "POST",
                "/v1/integrations/screenpipe",
                (200,),
                json={
                    "request_id": w.request_id,
                    "source": "screen",
                    "text": "Bob's screen: a spreadsheet.",
                    "timestamp_range": {"start": 1_790_000_000, "end": 1_790_000_060},
                },
            )
        ],
    ),
    # --- the web pages (signed-in session + CSRF token) ---------------------------------------
    "GET /": Scoped(
        WEB,
        _OWN,
        lambda w: [
            Call("GET", "/?discarded=true", (200,)),
            Call("GET", "/?q=ferry+tickets+to+the+island", (200,), htmx=True),
        ],
    ),
    f"GET {PAGE}": Owned(WEB, _pages("GET")),
    f"GET {PAGE}/edit": Owned(WEB, _pages("GET", "/edit")),
    f"POST {PAGE}/edit": Owned(WEB, _pages("POST", "/edit", {"title": "bob was here", "overview": "x"})),
    f"POST {PAGE}/discard": Owned(WEB, _pages("POST", "/discard")),
    f"POST {PAGE}/restore": Owned(WEB, _pages("POST", "/restore")),
    f"POST {PAGE}/reprocess": Owned(WEB, _pages("POST", "/reprocess")),
    f"POST {PAGE}/delete": Owned(WEB, _pages("POST", "/delete")),
    f"POST {PAGE}/action-items/{{index:int}}": Owned(
        WEB, _pages("POST", "/action-items/0", {"completed": "true"})
    ),
    f"GET {PAGE}/events/{{filename:str}}": Owned(WEB, _pages("GET", "/events/0.ics", owned="kept")),
    "GET /live": Scoped(WEB, _OWN + " (the open journals of the signed-in user)", _one("GET", "/live")),
    "GET /live/events": Scoped(
        WEB,
        _OWN + " (the channel of the signed-in user); a stream, so it is called on a real server "
        "by test_live_and_listen_on_a_real_server",
        lambda w: [],
    ),
    "GET /settings": Scoped(WEB, _OWN, _one("GET", "/settings")),
    "POST /settings/keys": Scoped(
        WEB, _OWN + " (a new key for the caller, shown once)", _one("POST", "/settings/keys", 201)
    ),
    "POST /settings/keys/{fingerprint:str}/revoke": Owned(
        WEB, _both("POST", lambda w: [f"/settings/keys/{w.fingerprint}/revoke"])
    ),
    "POST /settings/speech-profile": Scoped(
        WEB,
        _OWN,
        lambda w: [
            Call(
                "POST",
                "/settings/speech-profile",
                (200,),
                files={"file": ("bob.wav", w.profile_wav, "audio/wav")},
            )
        ],
    ),
    "GET /plugins": Scoped(WEB, _CATALOGUE, _one("GET", "/plugins")),
    "GET /plugins/{plugin_id:str}": Scoped(
        WEB,
        _CATALOGUE,
        lambda w: [Call("GET", "/plugins/notes", (200,)), Call("GET", "/plugins/summary", (200,))],
    ),
    "POST /plugins/{plugin_id:str}/enabled": Scoped(
        WEB, _CATALOGUE, _one("POST", "/plugins/notes/enabled", form={"enabled": "true"})
    ),
    "POST /plugins/{plugin_id:str}/review": Scoped(
        WEB, _CATALOGUE, _one("POST", "/plugins/notes/review", form={"score": "2", "review": "Meh."})
    ),
    "GET /plugins/{plugin_id:str}/deliveries": Scoped(
        WEB,
        _CATALOGUE + "; the log shown is the caller's (kept per entry and user)",
        _one("GET", "/plugins/notes/deliveries"),
    ),
    "POST /plugins/{plugin_id:str}/deliveries/{webhook_id:str}/retry": Owned(
        WEB,
        _both(
            "POST", lambda w: [f"/plugins/{w.plugin}/deliveries/{wid}/retry" for wid in w.webhooks.values()]
        ),
    ),
    "GET /login": Scoped(
        WEB, "sign-in form: a signed-in visitor is sent on", _one("GET", "/login?next=/settings", 303)
    ),
    "POST /login": Scoped(
        ANONYMOUS,
        "sign-in: the session is the token's owner's",
        lambda w: [Call("POST", "/login", (400,), form={"token": w.tokens["bad"]})],
    ),
    "POST /logout": Scoped(
        WEB_SECOND, "ends the caller's own session (the cookie's)", _one("POST", "/logout", 303)
    ),
    # --- no user data --------------------------------------------------------------------------
    "GET /health": Public("liveness, no data", _one("GET", "/health")),
    "GET /static/{file_path:path}": Public("our CSS and JS", _one("GET", "/static/app.css")),
    "HEAD /static/{file_path:path}": Public("our CSS and JS", _one("HEAD", "/static/app.js")),
    **{f"GET {path}": Public("the OpenAPI document and its viewers", _one("GET", path)) for path in _SCHEMA},
    "GET /schema/{path:str}": Public(
        "the OpenAPI plugin's not-found page", _one("GET", "/schema/nothing-here", 404)
    ),
}


def _automatic(handler: BaseRouteHandler) -> bool:
    """Litestar's own OPTIONS handler (it answers with the allowed methods, nothing else)."""
    return getattr(handler.fn, "__module__", "") == "litestar.routes.http"


def route_keys(app: Litestar) -> dict[str, BaseRouteHandler]:
    """Every route of ``app`` as ``"METHOD /path"`` (``"WS /path"`` for WebSockets), with its
    handler; Litestar's automatic OPTIONS handlers are left out."""
    keys: dict[str, BaseRouteHandler] = {}
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            keys[f"WS {route.path}"] = route.route_handler
        elif isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if _automatic(handler):
                    continue
                for method in sorted(handler.http_methods):
                    keys[f"{method} {route.path}"] = handler
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return keys

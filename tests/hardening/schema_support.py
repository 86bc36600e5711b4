"""Fuzzing every REST route from the OpenAPI schema the server publishes (schemathesis).

:class:`Fuzzer` sends schemathesis' generated requests (schema-valid and schema-breaking) to a
real server over HTTP, with some :class:`Credentials`, and turns into :class:`Finding` every
response that: is a 5xx, breaks what the schema documents for the route (status code,
content type, headers, body), is let through without credentials (schemathesis'
``ignored_auth`` probes), or refuses the request (4xx/5xx) yet changed the server's stored
state. State is everything the services hold, read through their ports (:func:`state_of`).

Generation is deterministic (Hypothesis ``derandomize``, no example database) and never
shrinks: a finding is reported with the exact request that caused it (a ``curl`` line).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import requests
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from litestar.routes import HTTPRoute, WebSocketRoute
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.ports import MemoryQuery
from app.core.services import Services
from app.plugins.catalogue import Catalogue

__all__ = [
    "CHECKS",
    "REST_PATH",
    "Credentials",
    "Finding",
    "Fuzzer",
    "app_routes",
    "schema_operations",
    "state_of",
]

REST_PATH = re.compile(r"^/(v\d+/.+|health)$")
"""The REST API: the versioned Omi routes and the health check. Every other HTTP route is a
web page (HTML, signed-in session, CSRF), a static file or the schema itself."""
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
"""What every response is held to. Not ``positive_data_acceptance``: a schema-valid request can
still be refused on its content (a WAV that is not 16 kHz, ``finished_at`` before
``started_at``, an event index past the memory's events). Not ``negative_data_rejection``:
Litestar parses in msgspec's lax mode, so a number where a date-time is documented is read as
unix seconds and accepted; that is deliberate leniency, not a fault."""


def schema_operations(raw: dict[str, Any]) -> set[str]:
    """``"METHOD /path"`` of every operation in an OpenAPI document."""
    return {f"{m.upper()} {path}" for path, item in raw["paths"].items() for m in item if m in _METHODS}


@dataclass(frozen=True)
class AppRoutes:
    """The routes an app serves: REST operations, other HTTP operations, WebSocket paths."""

    rest: frozenset[str]
    other_http: frozenset[str]
    websockets: frozenset[str]


def app_routes(app: Litestar) -> AppRoutes:
    """What ``app`` serves, split by :data:`REST_PATH` (HEAD and OPTIONS, which Litestar adds to
    every route, left out)."""
    rest: set[str] = set()
    other: set[str] = set()
    sockets: set[str] = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            sockets.add(route.path_format)
        elif isinstance(route, HTTPRoute):
            for method in route.methods - {"HEAD", "OPTIONS"}:
                label = f"{method} {route.path_format}"
                (rest if REST_PATH.match(route.path_format) else other).add(label)
    return AppRoutes(frozenset(rest), frozenset(other), frozenset(sockets))


# --- state -----------------------------------------------------------------------------------


async def _kv_value(services: Services, key: str) -> object:
    kv = services.kv
    try:
        return await kv.get(key)
    except TypeError:  # a hash or a list (WRONGTYPE)
        pass
    try:
        return await kv.hgetall(key)
    except TypeError:
        return await kv.items(key)


async def state_of(
    services: Services, catalogue: Catalogue, uids: Iterable[str], probe: list[float]
) -> dict[str, object]:
    """Everything stored, by part: memories (deleted and discarded included), messages and
    vectors of every user, the plugins as each of ``uids`` sees them, every key-value entry
    and every blob (by digest). ``probe`` is any vector of the embedder's dimension."""
    users = sorted({*uids, *await services.store.uids()})
    state: dict[str, object] = {}
    everything = MemoryQuery(limit=100_000, include_discarded=True, include_deleted=True)
    for uid in users:
        state[f"memories:{uid}"] = msgspec.json.encode(await services.store.list(uid, everything))
        state[f"messages:{uid}"] = msgspec.json.encode(await services.store.list_messages(uid, 100_000))
        matches = await services.index.query(probe, uid=uid, top_k=100_000)
        state[f"vectors:{uid}"] = sorted((m.id, m.memory_id) for m in matches)
    for uid in uids:
        state[f"plugins:{uid}"] = msgspec.json.encode(await catalogue.for_user(uid))
    for key in await services.kv.keys(""):
        state[f"kv:{key}"] = await _kv_value(services, key)
    for path in await services.blobs.paths(""):
        data = await services.blobs.get(path)
        state[f"blob:{path}"] = None if data is None else hashlib.sha256(data).hexdigest()
    return state


def changed_parts(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """The parts that differ (added, removed or changed), sorted."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k, ...) != after.get(k, ...))


# --- fuzzing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What the requests carry.

    Attributes:
        name: For reports.
        headers: Sent with every request (none for an anonymous caller).
        valid: Whether they authenticate; when not, every route but ``open_routes`` must
            answer 401 and nothing may change.
    """

    name: str
    headers: dict[str, str]
    valid: bool


@dataclass(frozen=True)
class Finding:
    """One fault: where, with what, and the request that shows it."""

    operation: str
    credentials: str
    mode: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.operation} [{self.credentials}, {self.mode}] {self.kind}:\n{self.detail}"


StateReader = Callable[[], dict[str, object]]


@dataclass
class Fuzzer:
    """Sends generated requests to ``base_url`` and collects findings.

    Attributes:
        schema: The loaded schema.
        base_url: The server.
        read_state: The server's state now (runs on the server's loop).
        examples: Requests per operation, per generation mode and per credentials.
        open_routes: Operations that need no credentials.
        pinned: Values to draw, besides generated ones, for parameters by location and name
            (e.g. ids of memories that exist), so requests get past the lookups.
    """

    schema: BaseSchema
    base_url: str
    read_state: StateReader
    examples: int
    open_routes: frozenset[str]
    pinned: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    findings: dict[tuple[str, str, str, str], Finding] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    before_operation: Callable[[], None] | None = None
    _known: dict[str, object] | None = None  # the state after the last refused request

    def operations(self) -> Iterator[APIOperation]:
        for result in self.schema.get_all_operations():
            yield result.ok()  # an operation the schema cannot describe is itself a failure

    def run(self, credentials: Credentials) -> None:
        """Every operation, schema-valid then schema-breaking requests, with ``credentials``."""
        with requests.Session() as session:
            for operation in self.operations():
                if self.before_operation is not None:
                    self.before_operation()
                self._known = None
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    self._fuzz(operation, mode, credentials, session)

    def _strategy(self, operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
        generated = operation.as_strategy(generation_mode=mode)
        if mode is not GenerationMode.POSITIVE:
            return generated
        variants = [generated]
        for parameter in operation.path_parameters:
            for value in self.pinned.get("path", {}).get(parameter.name, []):
                variants.append(
                    operation.as_strategy(generation_mode=mode, path_parameters={parameter.name: value})
                )
        for parameter in operation.query:
            for value in self.pinned.get("query", {}).get(parameter.name, []):
                variants.append(operation.as_strategy(generation_mode=mode, query={parameter.name: value}))
        return st.one_of(variants)

    def _fuzz(
        self,
        operation: APIOperation,
        mode: GenerationMode,
        credentials: Credentials,
        session: requests.Session,
    ) -> None:
        @given(case=self._strategy(operation, mode))
        @settings(
            max_examples=self.examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        def send(case: Case) -> None:
            self._send(case, mode, credentials, session)

        try:
            send()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise  # a schema-valid request must always be possible
            # nothing to break: the operation has no parameters and no body

    def _send(
        self, case: Case, mode: GenerationMode, credentials: Credentials, session: requests.Session
    ) -> None:
        label = case.operation.label
        for name in ("authorization", "api-key", "api_key"):  # generated security headers out
            if case.headers:
                for header in [h for h in case.headers if h.lower() == name]:
                    del case.headers[header]
        if credentials.headers:
            case.headers = {**(case.headers or {}), **credentials.headers}
        # A refused request changes nothing, so the state after it is the state before the next.
        before = self._known if self._known is not None else self.read_state()
        self._known = None
        try:
            response = case.call(base_url=self.base_url, session=session, timeout=60)
        except requests.RequestException as exc:
            self._record(label, credentials, mode, "request failed", f"{type(exc).__name__}: {exc}")
            return
        self.sent[label] = self.sent.get(label, 0) + 1
        self.statuses.setdefault(label, set()).add(response.status_code)
        try:
            case.validate_response(
                response, checks=CHECKS, headers=credentials.headers, transport_kwargs={"session": session}
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                assert isinstance(failure, Failure)
                detail = f"{failure.title}: {failure.message}\n{_reproduce(case, response.status_code)}"
                self._record(label, credentials, mode, failure.code, detail)
        if not credentials.valid and label not in self.open_routes and response.status_code != 401:
            detail = f"answered {response.status_code}, not 401\n{_reproduce(case, response.status_code)}"
            self._record(label, credentials, mode, "not refused", detail)
        if response.status_code >= 400:
            after = self.read_state()
            changed = changed_parts(before, after)
            if changed:
                detail = f"refused with {response.status_code} but changed {changed[:10]}"
                self._record(label, credentials, mode, "state changed", f"{detail}\n{_reproduce(case, 0)}")
            else:
                self._known = after

    def _record(
        self, label: str, credentials: Credentials, mode: GenerationMode, kind: str, detail: str
    ) -> None:
        key = (label, credentials.name, mode.value, kind)
        self.findings.setdefault(key, Finding(label, credentials.name, mode.value, kind, detail[:4000]))


def _reproduce(case: Case, status: int) -> str:
    prefix = f"[{status}] " if status else ""
    try:
        return prefix + case.as_curl_command()
    except Exception as exc:  # the request could not be rendered; say what it was
        return prefix + f"{case.method} {case.formatted_path} query={case.query!r} ({exc})"

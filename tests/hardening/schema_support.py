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
from requests.structures import CaseInsensitiveDict
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
    unsupported_method,
)

from app.core.ports import MemoryQuery, Vector
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
    unsupported_method,
]
"""What every response is held to. Left out: ``positive_data_acceptance`` (a schema-valid
request can still be refused on its content: a WAV that is not 16 kHz, ``finished_at`` before
``started_at``, an event index past the memory's events); ``negative_data_rejection`` (Litestar
parses in msgspec's lax mode, so a number where a date-time is documented is read as unix
seconds: deliberate leniency, not a fault); ``allow_header_conformance`` (Litestar 2's
automatic ``OPTIONS`` answer lists only the first method of a path, litestar-org/litestar#4169,
fixed in Litestar 3; OPTIONS is not part of the API)."""


def schema_operations(raw: dict[str, Any], *, with_input: bool = False) -> set[str]:
    """``"METHOD /path"`` of every operation in an OpenAPI document (``with_input``: only those
    that take parameters or a body)."""
    return {
        f"{method.upper()} {path}"
        for path, item in raw["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
        and (not with_input or operation.get("parameters") or operation.get("requestBody"))
    }


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
    services: Services, catalogue: Catalogue, uids: Iterable[str], probe: Vector
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
    """What the requests carry, and what that promises.

    Attributes:
        name: For reports.
        headers: Sent with every request (none for an anonymous caller).
        valid: Whether they authenticate; when not, every route but the open ones must
            answer 401.
        untouchable: Parts of the state (see :func:`state_of`) that no request with these
            credentials may change, whatever the answer (another user's data).
        secrets: Strings no answer to these credentials may contain (another user's ids).
    """

    name: str
    headers: dict[str, str]
    valid: bool
    untouchable: Callable[[str], bool] | None = None
    secrets: tuple[str, ...] = ()


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
        open_routes: Operations that need no credentials.
        pinned: Values to draw, besides generated ones, for parameters by location and name
            (e.g. ids of memories that exist), so schema-valid requests get past the lookups.
        before_operation: Run before each operation's requests (e.g. to undo deletions).
        sent: Requests sent, by operation.
        statuses: Status codes received, by operation (its own method only).
        findings: The faults, the first of each kind per operation, credentials and mode.
    """

    schema: BaseSchema
    base_url: str
    read_state: StateReader
    open_routes: frozenset[str]
    pinned: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    before_operation: Callable[[], None] | None = None
    sent: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    findings: dict[tuple[str, str, str, str], Finding] = field(default_factory=dict)
    _known: dict[str, object] | None = None  # the state after the last request

    def operations(self) -> Iterator[APIOperation[Any, Any, Any, Any]]:
        for result in self.schema.get_all_operations():
            yield result.ok()  # type: ignore[union-attr]  # an Err (undescribable operation) raises

    def run(self, credentials: Credentials, examples: int, *, coverage: bool = False) -> None:
        """Every operation with ``credentials``: with ``coverage``, schemathesis' deterministic
        boundary cases (edge values, missing and wrong-typed fields, undeclared methods);
        then ``examples`` schema-valid and ``examples`` schema-breaking generated requests."""
        with requests.Session() as session:
            for operation in self.operations():
                if self.before_operation is not None:
                    self.before_operation()
                self._known = None
                if coverage:
                    cases = self.schema.iter_coverage_cases(
                        operation,
                        generation_modes=list(GenerationMode),
                        generation_config=self.schema.config.generation_for(operation=operation),
                    )
                    for index, case in enumerate(cases):
                        mode = case.meta.generation.mode if case.meta else GenerationMode.POSITIVE
                        if mode is GenerationMode.POSITIVE and index % 3:
                            self._pin(case, index)
                        self._send(case, mode, credentials, session)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    self._fuzz(operation, mode, examples, credentials, session)

    def _pin(self, case: Case[Any], index: int) -> None:
        """Give a boundary case pinned values (two cases in three), so it gets past the lookups."""
        for location, container in (("path", case.path_parameters), ("query", case.query)):
            for name, values in self.pinned.get(location, {}).items():
                if container is not None and name in container and values:
                    container[name] = values[index % len(values)]

    def _strategy(
        self, operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode
    ) -> st.SearchStrategy[Case[Any]]:
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
        operation: APIOperation[Any, Any, Any, Any],
        mode: GenerationMode,
        examples: int,
        credentials: Credentials,
        session: requests.Session,
    ) -> None:
        @given(case=self._strategy(operation, mode))
        @settings(
            max_examples=examples,
            derandomize=True,  # the same requests on every run
            database=None,  # no .hypothesis directory
            deadline=None,
            phases=(Phase.explicit, Phase.generate),  # no shrinking: findings are recorded, not raised
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            print_blob=False,
        )
        def send(case: Case[Any]) -> None:
            self._send(case, mode, credentials, session)

        try:
            send()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise  # a schema-valid request must always be possible
            # nothing to break: the operation has no parameters and no body

    def _send(
        self, case: Case[Any], mode: GenerationMode, credentials: Credentials, session: requests.Session
    ) -> None:
        label = case.operation.label
        # The generated credentials make way for the real ones. Assigned, not edited in place, so
        # that schemathesis re-reads the case: a case generated "without Authorization" gets it.
        kept = {
            k: v for k, v in case.headers.items() if k.lower() not in ("authorization", "api-key", "api_key")
        }
        case.headers = CaseInsensitiveDict({**kept, **credentials.headers})
        before = self._known if self._known is not None else self.read_state()
        self._known = None
        try:
            response = case.call(base_url=self.base_url, session=session, timeout=60)
        except requests.RequestException as exc:
            self._record(label, credentials, mode, "request failed", f"{type(exc).__name__}: {exc}")
            return
        self.sent[label] = self.sent.get(label, 0) + 1
        if case.method.upper() == case.operation.method.upper():  # not an undeclared-method probe
            self.statuses.setdefault(label, set()).add(response.status_code)
        shown = _reproduce(case, response.status_code)
        try:
            case.validate_response(
                response, checks=CHECKS, headers=credentials.headers, transport_kwargs={"session": session}
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                assert isinstance(failure, Failure)
                self._record(
                    label, credentials, mode, failure.code, f"{failure.title}: {failure.message}\n{shown}"
                )
        if not credentials.valid and label not in self.open_routes and response.status_code != 401:
            self._record(label, credentials, mode, "not refused", f"answered {response.status_code}\n{shown}")
        leaked = [s for s in credentials.secrets if s in response.text]
        if leaked:
            self._record(label, credentials, mode, "leaked", f"the answer holds {leaked}\n{shown}")
        after = self.read_state()
        changed = changed_parts(before, after)
        if response.status_code >= 400 and changed:
            self._record(label, credentials, mode, "refused, yet changed", f"{changed[:10]}\n{shown}")
        touched = [part for part in changed if credentials.untouchable and credentials.untouchable(part)]
        if touched:
            self._record(label, credentials, mode, "touched another user's data", f"{touched[:10]}\n{shown}")
        self._known = after  # requests run one at a time: the state after one is the state before the next

    def _record(
        self, label: str, credentials: Credentials, mode: GenerationMode, kind: str, detail: str
    ) -> None:
        key = (label, credentials.name, mode.value, kind)
        self.findings.setdefault(key, Finding(label, credentials.name, mode.value, kind, detail[:4000]))


def _reproduce(case: Case[Any], status: int) -> str:
    """The request as a ``curl`` line (credentials masked), after its status."""
    try:
        return f"[{status}] {case.as_curl_command()}"
    except Exception as exc:  # the request could not be rendered; say what it was
        return f"[{status}] {case.method} {case.formatted_path} query={case.query!r} ({exc})"

"""A fake Pinecone data plane over HTTP, driven in tests by the real ``pinecone`` SDK.

It speaks the REST wire format of the data plane that ``pinecone`` 10's ``Index`` and
``AsyncIndex`` send (API version header ``X-Pinecone-Api-Version``, key in ``Api-Key``,
camelCase bodies): ``POST /vectors/upsert``, ``POST /query``, ``GET /vectors/fetch``,
``POST /vectors/delete`` and ``POST /describe_index_stats``. One dense index with the
cosine metric; its dimension is fixed when the fake is made, or by the first upsert.
Errors come back as the data plane sends them: ``{"code": <gRPC code>, "message": ...,
"details": []}`` with the HTTP status.

The metadata filter language (``matches``) has ``$eq $ne $gt $gte $lt $lte $in $nin
$exists $and $or`` and the implicit ``{"field": value}`` for ``$eq``. Comparisons are
typed: a string never equals a number and ``true`` never equals ``1``; a list-of-strings
field matches ``$eq``/``$in`` when any element does and ``$ne``/``$nin`` when none does;
a missing field satisfies only ``$ne``, ``$nin`` and ``$exists: false``. A malformed
filter is a 400, as on the real service.

The HTTP plumbing (``FakeHTTPService``, ``BackgroundServer``) is shared with the fake
OpenAI server.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs

import pytest
import uvicorn

from app.backends.pinecone_index import PineconeVectorIndex

__all__ = [
    "BackgroundServer",
    "FakeHTTPService",
    "FakePinecone",
    "FilterError",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "matches",
    "open_pinecone_index",
    "pinecone_fake",
    "pinecone_index",
]

PINECONE_KEY = "pc-test-key"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached a fake: header names lower-cased, the body parsed if JSON."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class HTTPError(Exception):
    """Raised by a handler to answer with ``status`` and the vendor's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: float | None = None
    stall: float = 0.0


class FakeHTTPService:
    """An ASGI app that records every request, injects faults, checks auth, then routes.

    Subclasses implement ``authorized``, ``handle`` and ``error_body``. ``handle`` runs under
    a lock, so tests may read the fake's state from their own thread at any time.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._closing = threading.Event()
        self._server: BackgroundServer | None = None

    # --- what tests call -------------------------------------------------------------
    def fail_next(self, count: int = 1, *, status: int = 500, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After`` if given)."""
        with self.lock:
            self._faults.extend(_Fault(status, retry_after) for _ in range(count))

    def stall_next(self, count: int = 1, *, seconds: float = 30.0) -> None:
        """Hold the next ``count`` requests for ``seconds`` (unanswered), then send a 504."""
        with self.lock:
            self._faults.extend(_Fault(504, stall=seconds) for _ in range(count))

    def reset(self) -> None:
        """Forget the requests seen and drop the faults not yet served (a fake shared by tests)."""
        with self.lock:
            self.requests.clear()
            self._faults.clear()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake is not running")
        return self._server.url

    def start(self) -> str:
        self._closing.clear()
        self._server = BackgroundServer(self)
        return self._server.start()

    def stop(self) -> None:
        self._closing.set()  # wakes stalled requests so the server can shut down at once
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what subclasses implement ---------------------------------------------------
    def authorized(self, request: RecordedRequest) -> bool:
        raise NotImplementedError

    def handle(self, request: RecordedRequest) -> Reply:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    # --- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            raw=b"".join(chunks),
        )
        with self.lock:
            self.requests.append(request)
            fault = self._faults.popleft() if self._faults else None
        reply = await self._reply(request, fault)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        headers = {"content-type": "application/json", **reply.headers, "content-length": str(len(payload))}
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _reply(self, request: RecordedRequest, fault: _Fault | None) -> Reply:
        if fault is not None:
            if fault.stall:  # held on a worker thread, woken early when the fake stops
                await asyncio.to_thread(self._closing.wait, fault.stall)
            headers = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
            return Reply(fault.status, self.error_body(fault.status, "injected failure"), headers)
        try:
            if not self.authorized(request):
                raise HTTPError(401, "Invalid API key")
            with self.lock:
                return self.handle(request)
        except HTTPError as exc:
            return Reply(exc.status, self.error_body(exc.status, exc.message))


class BackgroundServer:
    """Serve an ASGI app with uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self._app = app
        # proto=IPPROTO_TCP, or asyncio leaves Nagle on for the accepted connections (40 ms a reply).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, lifespan="off", ws="none", log_config=None, log_level="critical", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name=f"fake:{port}"
        )

    def start(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake server at {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


# --- the filter language -------------------------------------------------------------

_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 408: 4, 429: 8, 500: 13, 503: 14, 504: 4}
_MISSING = object()


class FilterError(ValueError):
    pass


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str" if isinstance(value, str) else "other"


def _same(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) != "other" and a == b


def _check_operand(op: str, operand: Any) -> None:
    if op in ("$eq", "$ne") and _kind(operand) == "other":
        raise FilterError(f"{op} takes a string, number or boolean")
    if op in ("$gt", "$gte", "$lt", "$lte") and _kind(operand) != "number":
        raise FilterError(f"{op} takes a number")
    if op in ("$in", "$nin") and (not isinstance(operand, list) or any(_kind(v) == "other" for v in operand)):
        raise FilterError(f"{op} takes an array of strings, numbers or booleans")
    if op == "$exists" and not isinstance(operand, bool):
        raise FilterError("$exists takes a boolean")


def _holds(op: str, value: Any, operand: Any) -> bool:
    _check_operand(op, operand)
    values = value if isinstance(value, list) else [value]
    if op == "$exists":
        return (value is not _MISSING) is operand
    if op == "$eq":
        return any(_same(v, operand) for v in values)
    if op == "$ne":
        return not any(_same(v, operand) for v in values)
    if op == "$in":
        return any(_same(v, o) for v in values for o in operand)
    if op == "$nin":
        return not any(_same(v, o) for v in values for o in operand)
    if _kind(value) != "number" or op not in ("$gt", "$gte", "$lt", "$lte"):
        if op not in ("$gt", "$gte", "$lt", "$lte"):
            raise FilterError(f"unknown operator {op}")
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    return bool(value < operand) if op == "$lt" else bool(value <= operand)


def matches(metadata: dict[str, Any] | None, flt: Any) -> bool:
    """Whether ``metadata`` satisfies the Pinecone filter ``flt`` (``FilterError`` if malformed)."""
    if not isinstance(flt, dict):
        raise FilterError("a filter is a JSON object")
    metadata = metadata or {}
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise FilterError(f"{key} takes a non-empty array of filters")
            results = [matches(metadata, sub) for sub in cond]  # all evaluated: each is validated
            if not (all(results) if key == "$and" else any(results)):
                return False
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key} at the top level")
        elif isinstance(cond, dict):
            if not cond or not all(op.startswith("$") for op in cond):
                raise FilterError(f"the condition on {key} needs operators")
            value = metadata.get(key, _MISSING)
            if not all([_holds(op, value, operand) for op, operand in cond.items()]):
                return False
        elif not _holds("$eq", metadata.get(key, _MISSING), cond):
            return False
    return True


# --- the fake data plane ---------------------------------------------------------------


@dataclass
class _Stored:
    values: list[float]
    metadata: dict[str, Any] | None


def _namespace(name: Any) -> str:
    if name is not None and not isinstance(name, str):
        raise HTTPError(400, "namespace must be a string")
    return name or "__default__"


class FakePinecone(FakeHTTPService):
    """One cosine index. ``namespaces[name][id]`` holds what was upserted ("" is ``__default__``)."""

    def __init__(self, api_key: str = PINECONE_KEY, dimension: int | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.dimension = dimension
        self.namespaces: dict[str, dict[str, _Stored]] = {}

    def stored(self, namespace: str = "") -> dict[str, dict[str, Any]]:
        """A copy of a namespace: ``{id: {"values": [...], "metadata": {...}}}``."""
        with self.lock:
            return {
                vid: {"values": list(s.values), "metadata": dict(s.metadata or {})}
                for vid, s in self.namespaces.get(_namespace(namespace), {}).items()
            }

    def authorized(self, request: RecordedRequest) -> bool:
        return request.headers.get("api-key") == self.api_key

    def error_body(self, status: int, message: str) -> Any:
        return {"code": _GRPC_CODES.get(status, 2), "message": message, "details": []}

    def handle(self, request: RecordedRequest) -> Reply:
        routes = {
            ("POST", "/vectors/upsert"): self._upsert,
            ("POST", "/query"): self._query,
            ("POST", "/vectors/delete"): self._delete,
            ("POST", "/describe_index_stats"): self._stats,
        }
        if (request.method, request.path) == ("GET", "/vectors/fetch"):
            return Reply(body=self._fetch(request.query))
        handler = routes.get((request.method, request.path))
        if handler is None:
            raise HTTPError(404, f"no route {request.method} {request.path}")
        try:
            body = request.json
        except ValueError as exc:
            raise HTTPError(400, f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        try:
            return Reply(body=handler(body))
        except FilterError as exc:
            raise HTTPError(400, f"Invalid filter: {exc}") from exc

    def _dense(self, values: Any) -> list[float]:
        if not isinstance(values, list) or not values or any(_kind(v) != "number" for v in values):
            raise HTTPError(400, "values must be a non-empty array of numbers")
        if self.dimension is not None and len(values) != self.dimension:
            raise HTTPError(
                400,
                f"Vector dimension {len(values)} does not match the dimension of the index {self.dimension}",
            )
        if not any(values):
            raise HTTPError(400, "Dense vectors must contain at least one non-zero value")
        return [float(v) for v in values]

    def _upsert(self, body: dict[str, Any]) -> Any:
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not 1 <= len(vectors) <= 1000:
            raise HTTPError(400, "vectors must be an array of 1 to 1000 vectors")
        checked: list[tuple[str, _Stored]] = []
        for vector in vectors:
            vid, metadata = vector.get("id"), vector.get("metadata")
            if not isinstance(vid, str) or not 1 <= len(vid) <= 512 or not vid.isascii():
                raise HTTPError(400, "a vector id is an ASCII string of 1 to 512 characters")
            if metadata is not None and (
                not isinstance(metadata, dict)
                or any(_kind(v) == "other" and not _is_str_list(v) for v in metadata.values())
            ):
                raise HTTPError(400, "metadata values are strings, numbers, booleans or lists of strings")
            values = self._dense(vector.get("values"))
            self.dimension = self.dimension or len(values)
            checked.append((vid, _Stored(values, metadata)))
        space = self.namespaces.setdefault(_namespace(body.get("namespace")), {})
        space.update(checked)
        return {"upsertedCount": len(checked)}

    def _query(self, body: dict[str, Any]) -> Any:
        top_k: Any = body.get("topK")
        flt = body.get("filter")
        if _kind(top_k) != "number" or not 1 <= top_k <= 10_000:
            raise HTTPError(400, "topK must be between 1 and 10000")
        space = self.namespaces.get(_namespace(body.get("namespace")), {})
        if flt is not None:
            matches({}, flt)  # a malformed filter is an error even on an empty namespace
        if "id" in body:
            stored = space.get(body["id"])
            query = stored.values if stored else None
        else:
            query = self._dense(body.get("vector"))
        hits: list[tuple[float, str, _Stored]] = []
        for vid, item in space.items():
            if query is not None and (flt is None or matches(item.metadata, flt)):
                hits.append((_cosine(query, item.values), vid, item))
        hits.sort(key=lambda h: (-h[0], h[1]))
        found = []
        for score, vid, item in hits[: int(top_k)]:
            match: dict[str, Any] = {"id": vid, "score": score, "values": []}
            if body.get("includeValues"):
                match["values"] = item.values
            if body.get("includeMetadata") and item.metadata is not None:
                match["metadata"] = item.metadata
            found.append(match)
        return {
            "results": [],
            "matches": found,
            "namespace": body.get("namespace") or "",
            "usage": {"readUnits": 5},
        }

    def _fetch(self, query: dict[str, list[str]]) -> Any:
        ids = query.get("ids", [])
        if not ids:
            raise HTTPError(400, "ids must be given")
        name = (query.get("namespace") or [""])[0]
        space = self.namespaces.get(_namespace(name), {})
        vectors: dict[str, dict[str, Any]] = {}
        for vid in ids:
            if (item := space.get(vid)) is not None:
                vectors[vid] = {"id": vid, "values": item.values}
                if item.metadata is not None:
                    vectors[vid]["metadata"] = item.metadata
        return {"vectors": vectors, "namespace": name, "usage": {"readUnits": 1}}

    def _delete(self, body: dict[str, Any]) -> Any:
        space = self.namespaces.get(_namespace(body.get("namespace")), {})
        ids, flt = body.get("ids"), body.get("filter")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
                raise HTTPError(400, "ids must be an array of at most 1000 strings")
            for vid in ids:
                space.pop(vid, None)
        elif body.get("deleteAll") is True:
            space.clear()
        elif flt:
            for vid in [vid for vid, item in space.items() if matches(item.metadata, flt)]:
                del space[vid]
        else:
            raise HTTPError(400, "delete needs ids, deleteAll or a filter")
        return {}

    def _stats(self, body: dict[str, Any]) -> Any:
        if body.get("filter"):
            raise HTTPError(400, "describe_index_stats does not take a filter on serverless indexes")
        counts = {name: {"vectorCount": len(space)} for name, space in self.namespaces.items() if space}
        return {
            "namespaces": counts,
            "dimension": self.dimension or 0,
            "indexFullness": 0.0,
            "totalVectorCount": sum(c["vectorCount"] for c in counts.values()),
            "metric": "cosine",
            "vectorType": "dense",
        }


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise HTTPError(400, f"Vector dimension {len(a)} does not match the dimension of the index {len(b)}")
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def pinecone_fake() -> Iterator[FakePinecone]:
    """A fresh fake data plane on a free port, stopped after the test."""
    fake = FakePinecone()
    with fake:
        yield fake


def open_pinecone_index(
    fake: FakePinecone, *, namespace: str = "", timeout: float = 5.0, tries: int = 3, backoff: float = 0.01
) -> PineconeVectorIndex:
    """A ``PineconeVectorIndex`` on ``fake`` (each call a new client of the same index), fast backoff."""
    return PineconeVectorIndex(
        fake.api_key, fake.url, namespace=namespace, timeout=timeout, tries=tries, backoff=backoff
    )


@pytest.fixture
async def pinecone_index(pinecone_fake: FakePinecone) -> AsyncIterator[PineconeVectorIndex]:
    """A ``PineconeVectorIndex`` on a fresh fake, with fast retries, closed after the test."""
    index = open_pinecone_index(pinecone_fake)
    yield index
    await index.close()

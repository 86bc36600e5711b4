"""``omi-backend doctor``: check every configured backend and say what is wrong in plain words.

One check per port, each on its own adapter (built alone, so a backend that cannot even be
constructed is reported without hiding the others) and bounded by a timeout, so a backend
that does not answer is a failed line, never a hang:

- store: a read (one page of a user that does not exist);
- index: a query with a vector of the embedder's dimension (Pinecone refuses one of another
  dimension, so a mismatch shows here);
- blobs: put, get and delete of a probe blob under ``omi-doctor/``;
- kv: a ping where the adapter has one (Redis), then set, get and delete of a probe key;
- embedder: one word, checked for the promised dimension;
- llm: one discard decision on a short sentence (for OpenAI, a tiny request);
- stt: a live stream opened and closed (Deepgram: a connection; Whisper: the model loaded).

One line per backend on stdout; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from app.core.errors import BackendUnavailable
from app.core.models import TranscriptSegment
from app.core.ports import (
    BlobStore,
    Embedder,
    KeyValue,
    LanguageModel,
    MemoryQuery,
    MemoryStore,
    SpeechToText,
    VectorIndex,
)
from app.ops.common import close_all

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["Check", "diagnose", "explain", "register", "run"]

PROBE_UID = "omi-doctor"
_ORDER = ("store", "index", "blobs", "kv", "embedder", "llm", "stt")


@runtime_checkable
class _Pingable(Protocol):
    async def ping(self) -> None: ...


@dataclass
class Check:
    """The outcome for one backend: ``problem`` is ``None`` when it works."""

    port: str
    adapter: str
    problem: str | None = None
    skipped: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        status = "SKIPPED" if self.skipped else "OK" if self.ok else "FAILED"
        detail = (
            f"{self.adapter}: {self.problem}" if self.problem else f"{self.adapter} ({self.seconds:.2f} s)"
        )
        return f"{self.port:<9}{status:<8}{detail}"


def explain(exc: BaseException, limit: float) -> str:
    """A failure in plain words."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {limit:g} s (is it running and reachable from here?)"
    text = exc.detail if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if "defaultcredentialserror" in lowered or "could not automatically determine credentials" in lowered:
        return (
            "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account "
            "key, or run on Google Cloud with a service account"
        )
    hints = (
        (
            ("authenticationerror", "401", "invalid api key", "unauthenticated", "api key"),
            "the key was refused",
        ),
        (("permissiondenied", "403", "forbidden"), "permission denied"),
        (("connection refused", "connecterror", "connectionerror", "apiconnectionerror"), "cannot connect"),
        (("notfound", "404", "does not exist"), "not found"),
    )
    for needles, words in hints:
        if any(needle in lowered for needle in needles):
            return f"{words} ({text})"
    return text


async def _store(store: MemoryStore) -> None:
    await store.list(PROBE_UID, MemoryQuery(limit=1))


async def _index(index: VectorIndex, dimension: int) -> None:
    probe = np.zeros(dimension, dtype=np.float32)
    probe[0] = 1.0
    await index.query(probe, uid=PROBE_UID, top_k=1)


async def _blobs(blobs: BlobStore) -> None:
    path, data = f"{PROBE_UID}/probe-{uuid.uuid4().hex}.txt", b"omi-backend doctor"
    await blobs.put(path, data, "text/plain")
    try:
        if await blobs.get(path) != data:
            raise RuntimeError("a probe blob was written but read back different")
    finally:
        await blobs.delete(path)


async def _kv(kv: KeyValue) -> None:
    if isinstance(kv, _Pingable):
        await kv.ping()
    key = f"{PROBE_UID}:{uuid.uuid4().hex}"
    await kv.set(key, "ok", ttl=60)
    try:
        if await kv.get(key) != "ok":
            raise RuntimeError("a probe key was written but read back different")
    finally:
        await kv.delete(key)


async def _embedder(embedder: Embedder) -> None:
    rows = await embedder.embed(["doctor"])
    if rows.shape != (1, embedder.dimension):
        raise RuntimeError(f"one text gave vectors of shape {rows.shape}, not (1, {embedder.dimension})")


async def _llm(llm: LanguageModel) -> None:
    await llm.should_discard("The design review is on Tuesday at three; I will send the slides by Friday.")


async def _stt(stt: SpeechToText) -> None:
    async def ignore(segments: list[TranscriptSegment]) -> None:
        pass

    stream = await stt.open(language="en", sample_rate=16_000, on_segments=ignore)
    await stream.close()


async def _check(
    port: str, adapter: str, build: Callable[[], Any], probe: Callable[[Any], Awaitable[None]], limit: float
) -> tuple[Check, Any]:
    """Build one adapter and probe it; the outcome and the adapter (``None`` if not built)."""
    check, began = Check(port, adapter), time.monotonic()
    built = None
    try:
        built = build()
        async with asyncio.timeout(limit):
            await probe(built)
    except Exception as exc:
        check.problem = explain(exc, limit)
    check.seconds = time.monotonic() - began
    return check, built


async def diagnose(settings: Settings, limit: float = 20.0) -> list[Check]:
    """Check each configured backend; one :class:`Check` per port, in a fixed order."""
    from app import adapters
    from app.adapters import build_speech_to_text

    described = adapters.describe(settings)
    checks: list[Check] = []
    opened: list[Any] = []
    try:
        for port, build, probe in (
            ("store", lambda: adapters.build_memory_store(settings), _store),
            ("blobs", lambda: adapters.build_blob_store(settings), _blobs),
            ("kv", lambda: adapters.build_key_value(settings), _kv),
        ):
            check, built = await _check(port, described[port], build, probe, limit)
            checks.append(check)
            opened.append(built)
        embedded, embedder = await _check(
            "embedder", described["embedder"], lambda: adapters.build_embedder(settings), _embedder, limit
        )
        opened.append(embedder)
        if embedded.ok:

            async def query(index: VectorIndex) -> None:
                await _index(index, embedder.dimension)

            check, built = await _check(
                "index", described["index"], lambda: adapters.build_vector_index(settings), query, limit
            )
            opened.append(built)
        else:
            check = Check("index", described["index"], "not checked: it needs the embedder's dimension", True)
        checks.extend([check, embedded])
        if embedder is not None:
            check, built = await _check(
                "llm",
                described["llm"],
                lambda: adapters.build_language_model(settings, embedder),
                _llm,
                limit,
            )
            opened.append(built)
        else:
            check = Check("llm", described["llm"], "not checked: the embedder could not be made", True)
        checks.append(check)
        check, built = await _check(
            "stt", described["stt"], lambda: build_speech_to_text(settings), _stt, limit
        )
        checks.append(check)
        opened.append(built)
    finally:
        await close_all(*(adapter for adapter in opened if adapter is not None))
    return sorted(checks, key=lambda c: _ORDER.index(c.port))


def register(commands: Any) -> None:
    """Add ``doctor`` to the CLI's sub-commands."""
    parser = commands.add_parser(
        "doctor",
        help="check every configured backend and say what is wrong",
        description=(
            "Check each configured backend (store: a read; index: a query; blobs: put, get and "
            "delete of a probe; kv: ping, set, get and delete; embedder: one word; llm: one small "
            "request; stt: a live stream opened and closed) and print one line per backend. Exit "
            "status 1 if any check fails."
        ),
    )
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds each check may take (default: 20)"
    )
    parser.set_defaults(run=run)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """The ``doctor`` command."""
    checks = await diagnose(settings, limit=args.timeout)
    for check in checks:
        print(check.line())
    if problems := [c for c in checks if not c.ok]:
        print(f"{len(problems)} of {len(checks)} backends have a problem")
        return 1
    print(f"all {len(checks)} backends work")
    return 0

"""``omi-backend migrate --to ENVFILE``: copy everything from these adapters to those of ENVFILE.

The source is the configured (usually embedded) adapters; the target is the adapters the
settings in ENVFILE choose (usually the production ones). Copied, in this order:

1. memories, deleted and discarded ones too, by id, user by user, a page at a time; the
   vectors of the kept ones are embedded again by the target's embedder (so a change of
   embedder is handled) and upserted by id;
2. messages, by id;
3. blobs, by path (the content type guessed from the name: the file store keeps none);
4. key-value state: strings (with the time they have left), lists and hashes, key by key.

Idempotent: every write replaces by id, path or key, so a re-run duplicates nothing.
Resumable: the target's KeyValue keeps a checkpoint (the hash ``migrate:checkpoint``) updated
after each page, blob and batch of keys; an interrupted run continues where it stopped, and a
finished one does nothing until it is asked to ``--restart``. A port whose source and target
are the same backend is skipped. Stop the server (or at least expect to re-run with
``--restart`` for what it wrote meanwhile): offsets assume the source does not change.
"""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from app.config import Settings, SettingsError
from app.core.errors import BackendUnavailable
from app.core.ports import BlobStore, Embedder, KeyValue, MemoryQuery, MemoryStore, VectorIndex
from app.ops.common import close_all
from app.ops.progress import Progress
from app.ops.reindex import index_memories

__all__ = ["CHECKPOINT_KEY", "Backends", "MigrationReport", "copy_key", "migrate", "register", "run"]

T = TypeVar("T")

CHECKPOINT_KEY = "migrate:checkpoint"
PAGE = 100  # memories (and messages) per page
KEY_BATCH = 100  # key-value keys copied between checkpoints
WRITERS = 8  # concurrent writes to the target


@dataclass
class Backends:
    """One side of a migration; the source needs no index or embedder. ``same`` names the ports
    whose source and target are one backend (nothing to copy there)."""

    store: MemoryStore
    blobs: BlobStore
    kv: KeyValue
    index: VectorIndex | None = None
    embedder: Embedder | None = None
    same: frozenset[str] = frozenset()


@dataclass
class MigrationReport:
    """What a run copied (a resumed run counts only what it did itself)."""

    users: int = 0
    memories: int = 0
    vectors: int = 0
    messages: int = 0
    blobs: int = 0
    keys: int = 0
    skipped: list[str] = field(default_factory=list)
    already_done: bool = False


async def _bounded(calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the calls at most ``WRITERS`` at a time; the first failure is raised."""
    gate = asyncio.Semaphore(WRITERS)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(c) for c in calls)))


async def copy_key(source: KeyValue, target: KeyValue, key: str) -> bool:
    """Copy one key whatever it holds (string with its expiry, list, hash); ``False`` if it is gone."""
    try:
        value = await source.get(key)
    except TypeError:  # a list or a hash
        value = None
    else:
        if value is None:
            return False
        ttl = await source.ttl(key)
        await target.set(key, value, ttl=ttl)
        return True
    try:
        items = await source.items(key)
    except TypeError:  # a hash
        fields = await source.hgetall(key)
        await target.delete(key)
        await _bounded([partial(target.hset, key, f, v) for f, v in fields.items()])
        return bool(fields)
    await target.delete(key)
    if items:
        await target.append(key, *items)
    return bool(items)


async def _memories(source: Backends, target: Backends, uid: str, report: MigrationReport) -> None:
    field_name = f"memories:{uid}"
    state = await target.kv.hget(CHECKPOINT_KEY, field_name)
    if state == "done":
        return
    offset = int(state or 0)
    while True:
        page = await source.store.list(uid, MemoryQuery(include_deleted=True, limit=PAGE, offset=offset))
        await _bounded([partial(target.store.put, uid, m) for m in page])
        report.memories += len(page)
        if "index" not in target.same and target.index is not None and target.embedder is not None:
            kept = [m for m in page if not (m.deleted or m.discarded)]
            report.vectors += len(await index_memories(uid, kept, target.index, target.embedder))
        offset += len(page)
        done = len(page) < PAGE
        await target.kv.hset(CHECKPOINT_KEY, field_name, "done" if done else str(offset))
        if done:
            return


async def _messages(source: Backends, target: Backends, uid: str, report: MigrationReport) -> None:
    field_name = f"messages:{uid}"
    if await target.kv.hget(CHECKPOINT_KEY, field_name) == "done":
        return
    offset = 0
    while page := await source.store.list_messages(uid, limit=PAGE, offset=offset):
        await _bounded([partial(target.store.put_message, uid, m) for m in page])
        report.messages += len(page)
        offset += len(page)
    await target.kv.hset(CHECKPOINT_KEY, field_name, "done")


async def _blobs(source: Backends, target: Backends, report: MigrationReport) -> None:
    last = await target.kv.hget(CHECKPOINT_KEY, "blobs") or ""
    paths = [p for p in await source.blobs.paths() if p > last]
    bar = Progress("blobs", len(paths))
    for done, path in enumerate(paths, 1):
        data = await source.blobs.get(path)
        if data is not None:
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            await target.blobs.put(path, data, kind)
            report.blobs += 1
        await target.kv.hset(CHECKPOINT_KEY, "blobs", path)
        bar.update(done)
    bar.finish(len(paths))


async def _keys(source: Backends, target: Backends, report: MigrationReport) -> None:
    last = await target.kv.hget(CHECKPOINT_KEY, "kv") or ""
    keys = [k for k in await source.kv.keys("") if k > last and not k.startswith("migrate:")]
    bar = Progress("keys", len(keys))
    for start in range(0, len(keys), KEY_BATCH):
        batch = keys[start : start + KEY_BATCH]
        copied = await _bounded([partial(copy_key, source.kv, target.kv, k) for k in batch])
        report.keys += sum(copied)
        await target.kv.hset(CHECKPOINT_KEY, "kv", batch[-1])
        bar.update(start + len(batch))
    bar.finish(len(keys))


async def migrate(source: Backends, target: Backends, *, restart: bool = False) -> MigrationReport:
    """Copy memories (with vectors), messages, blobs and key-value state; see the module doc."""
    report = MigrationReport(skipped=sorted(target.same))
    if restart:
        await target.kv.delete(CHECKPOINT_KEY)
    elif await target.kv.hget(CHECKPOINT_KEY, "finished"):
        report.already_done = True
        return report
    if "store" not in target.same:
        uids = await source.store.uids()
        report.users = len(uids)
        bar = Progress("users", len(uids))
        for done, uid in enumerate(uids):
            bar.update(done, f"{report.memories} memories ({uid})")
            await _memories(source, target, uid, report)
            await _messages(source, target, uid, report)
        bar.finish(len(uids), f"{report.memories} memories, {report.messages} messages")
    if "blobs" not in target.same:
        await _blobs(source, target, report)
    if "kv" not in target.same:
        await _keys(source, target, report)
    await target.kv.hset(CHECKPOINT_KEY, "finished", datetime.now(UTC).isoformat())
    return report


def register(commands: Any) -> None:
    """Add ``migrate`` to the CLI's sub-commands."""
    parser = commands.add_parser(
        "migrate",
        help="copy memories, vectors, blobs and key-value state to the backends of another settings file",
        description=(
            "Copy everything from the configured backends (usually the embedded ones) to those "
            "the settings in ENVFILE choose (usually the production ones): memories (vectors "
            "embedded again by the target's embedder), messages, blobs and key-value state. "
            "Idempotent, and resumable from a checkpoint kept in the target's key-value store. "
            "Stop the server first."
        ),
    )
    parser.add_argument(
        "--to", required=True, type=Path, metavar="ENVFILE", help="a .env file with the target's settings"
    )
    parser.add_argument(
        "--restart", action="store_true", help="ignore the checkpoint of an earlier run and copy everything"
    )
    parser.set_defaults(run=run)


def _open(settings: Settings, *, with_index: bool, same: frozenset[str] = frozenset()) -> Backends:
    from app import adapters

    return Backends(
        store=adapters.build_memory_store(settings),
        blobs=adapters.build_blob_store(settings),
        kv=adapters.build_key_value(settings),
        index=adapters.build_vector_index(settings) if with_index else None,
        embedder=adapters.build_embedder(settings) if with_index else None,
        same=same,
    )


def _same_backends(source: Settings, target: Settings) -> frozenset[str]:
    from app.adapters import describe

    before, after = describe(source), describe(target)
    same = {port for port in ("store", "blobs", "kv") if before[port] == after[port]}
    if "store" in same or (before["index"], before["embedder"]) == (after["index"], after["embedder"]):
        same.add("index")
    return frozenset(same)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """The ``migrate`` command."""
    if not args.to.is_file():
        print(f"omi-backend migrate: {args.to} is not a file", file=sys.stderr)
        return 2
    try:
        target_settings = Settings.from_env(environ={}, env_file=args.to)
    except SettingsError as exc:
        print(f"omi-backend migrate: {args.to}: {exc}", file=sys.stderr)
        return 2
    same = _same_backends(settings, target_settings)
    source = _open(settings, with_index=False)
    target = _open(target_settings, with_index="index" not in same, same=same)
    try:
        report = await migrate(source, target, restart=args.restart)
    except BackendUnavailable as exc:
        print(f"omi-backend migrate: {exc}; run it again to continue where it stopped", file=sys.stderr)
        return 1
    finally:
        await close_all(source.store, source.blobs, source.kv)
        await close_all(target.store, target.blobs, target.kv, target.index, target.embedder)
    if report.already_done:
        print("nothing to do: already migrated (--restart copies everything again)", file=sys.stderr)
        return 0
    skipped = f"; skipped (same backend): {', '.join(report.skipped)}" if report.skipped else ""
    print(
        f"copied {report.memories} memories of {report.users} users ({report.vectors} vectors), "
        f"{report.messages} messages, {report.blobs} blobs, {report.keys} keys{skipped}",
        file=sys.stderr,
    )
    return 0

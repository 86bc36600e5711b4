"""``omi-backend reindex [--uid U]``: rebuild the vector index from the memory store.

Every memory that is neither deleted nor discarded is embedded again (its
:func:`~app.core.pipeline.memory_document`) with the configured embedder and upserted by its
id, so running it twice changes nothing. Use it after a change of embedder, or to repair an
index. Vectors of deleted and discarded memories are removed, best effort: a failure there is
counted and reported, not fatal. Entries of the re-indexing queue (``vectors:pending``) that
this run fixed are cleared. Progress goes to stderr, one step per page of memories.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.errors import BackendUnavailable
from app.core.models import Memory
from app.core.pipeline import PENDING_INDEX_KEY, memory_document, vector_id
from app.core.ports import Embedder, KeyValue, MemoryQuery, MemoryStore, VectorIndex, VectorItem
from app.ops.common import close_all
from app.ops.progress import Progress

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["PAGE", "ReindexReport", "index_memories", "register", "reindex", "run"]

log = logging.getLogger("omi_backend.reindex")

PAGE = 100  # memories read, embedded and upserted at a time


@dataclass
class ReindexReport:
    """What a run did: users seen, vectors written, stale vectors removed (or not)."""

    users: int = 0
    indexed: int = 0
    removed: int = 0
    removal_failures: int = 0


async def index_memories(
    uid: str, memories: Sequence[Memory], index: VectorIndex, embedder: Embedder
) -> list[str]:
    """Embed and upsert the memories' vectors in one batch; the memory ids indexed."""
    if not memories:
        return []
    vectors = await embedder.embed([memory_document(m.structured) for m in memories])
    await index.upsert(
        [
            VectorItem(
                id=vector_id(uid, m.id),
                values=vector.tolist(),
                uid=uid,
                memory_id=m.id,
                created_at=int(m.created_at.timestamp()),
            )
            for m, vector in zip(memories, vectors, strict=True)
        ]
    )
    return [m.id for m in memories]


async def reindex(
    store: MemoryStore,
    index: VectorIndex,
    embedder: Embedder,
    kv: KeyValue,
    *,
    uid: str | None = None,
    progress: Progress | None = None,
) -> ReindexReport:
    """Rebuild the vectors of ``uid`` (every user when ``None``) from ``store``."""
    uids = [uid] if uid is not None else await store.uids()
    report = ReindexReport(users=len(uids))
    bar = progress or Progress("users", len(uids))
    bar.total = len(uids)
    bar.update(0)
    for done, user in enumerate(uids):
        offset = 0
        while True:
            page = await store.list(user, MemoryQuery(include_deleted=True, limit=PAGE, offset=offset))
            kept = [m for m in page if not (m.deleted or m.discarded)]
            indexed = await index_memories(user, kept, index, embedder)
            report.indexed += len(indexed)
            if indexed:
                await kv.hdel(PENDING_INDEX_KEY, *(f"{user}:{memory_id}" for memory_id in indexed))
            stale = [vector_id(user, m.id) for m in page if m.deleted or m.discarded]
            if stale:
                try:
                    await index.delete(stale)
                    report.removed += len(stale)
                except Exception as exc:  # best effort: the search never shows them anyway
                    log.warning("could not remove %d stale vectors of %s: %s", len(stale), user, exc)
                    report.removal_failures += len(stale)
            offset += len(page)
            bar.update(done, f"{report.indexed} memories indexed ({user})")
            if len(page) < PAGE:
                break
    bar.finish(len(uids), f"{report.indexed} memories indexed")
    return report


def register(commands: Any) -> None:
    """Add ``reindex`` to the CLI's sub-commands."""
    parser = commands.add_parser(
        "reindex",
        help="rebuild the vector index from the memory store (after a change of embedder)",
        description=(
            "Embed every memory that is not deleted or discarded again, with the configured "
            "embedder, and upsert its vector (by id: running it twice changes nothing). Vectors "
            "of deleted and discarded memories are removed, best effort. Progress on stderr."
        ),
    )
    parser.add_argument("--uid", help="only this user's memories (default: every user)")
    parser.set_defaults(run=run)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """The ``reindex`` command: exit status 0 when every vector was written."""
    import sys

    from app.adapters import build_embedder, build_key_value, build_memory_store, build_vector_index

    store, index, kv = build_memory_store(settings), build_vector_index(settings), build_key_value(settings)
    embedder = build_embedder(settings)
    try:
        report = await reindex(store, index, embedder, kv, uid=args.uid)
    except BackendUnavailable as exc:
        print(f"omi-backend reindex: {exc}; run it again when it is back", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. vectors of another dimension already in the index
        print(f"omi-backend reindex: {exc}", file=sys.stderr)
        print(
            "  if the embedder changed dimension: for the embedded index, delete "
            f"{settings.data_dir / 'vectors.db'} and run reindex again; for Pinecone, create an "
            "index of the new dimension and point PINECONE_HOST at it",
            file=sys.stderr,
        )
        return 1
    finally:
        await close_all(store, index, kv, embedder)
    failed = f" ({report.removal_failures} could not be removed)" if report.removal_failures else ""
    print(
        f"reindexed {report.indexed} memories of {report.users} users; "
        f"removed {report.removed} stale vectors{failed}",
        file=sys.stderr,
    )
    return 0

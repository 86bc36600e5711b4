"""``omi-backend migrate --to ENVFILE``: embedded -> Firestore + Pinecone + Cloud Storage + Redis.

The source is filled as a running embedded server would have left it; the target is every
production stand-in. After a migration the production server serves the same data to the same
token; a second run changes nothing; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.adapters import build_blob_store, build_key_value, build_memory_store
from app.config import Settings
from app.core.errors import BackendUnavailable
from app.core.models import Memory, Message
from app.core.ports import KeyValue, MemoryQuery, MemoryStore
from app.core.tokens import TokenService
from app.main import create_app
from app.ops.migrate import CHECKPOINT_KEY, Backends, migrate
from tests.api.conftest import WHISPER
from tests.inloop import in_loop_client
from tests.ops.helpers import T0, cli, make_memory, production_env, use_env
from tests.production import Production, production_services

pytestmark = pytest.mark.anyio

ALICE = 130  # memories: more than one page
BOB = 3
PROFILE = b"RIFF....WAVEfmt " + bytes(range(256))


@dataclass
class Source:
    settings: Settings
    token: str
    kept: set[str]  # vector ids of the memories that are neither deleted nor discarded


async def fill_source(data_dir: Path) -> Source:
    """What an embedded server leaves: memories (some deleted or discarded), messages, a speech
    profile, a token, plugin state of every kind, a pending-index entry and an expiring lock."""
    settings = Settings(data_dir=data_dir)
    store, blobs, kv = build_memory_store(settings), build_blob_store(settings), build_key_value(settings)
    kept = set()
    try:
        for n in range(ALICE):
            memory = make_memory(f"a{n:03d}", n, deleted=n % 40 == 1, discarded=n % 50 == 2)
            await store.put("alice", memory)
            if not (memory.deleted or memory.discarded):
                kept.add(f"alice-{memory.id}")
        for n in range(BOB):
            await store.put("bob", make_memory(f"b{n}", n))
            kept.add(f"bob-b{n}")
        for n in range(3):
            await store.put_message("alice", Message(id=f"q{n}", text=f"question {n}", created_at=T0))
        await blobs.put("alice/speech_profile.wav", PROFILE, "audio/wav")
        await blobs.put("bob/notes/first note.txt", b"hello")
        token = await TokenService(kv).create("alice")
        await kv.set("users:alice:speech_profile_duration", "7.250")
        await kv.append("plugins:example:log", "one", "two", "three")
        await kv.hset("plugins:mentor-01:reviews", "alice", '{"score": 5}')
        await kv.hset("plugins:mentor-01:reviews", "bob", '{"score": 3}')
        await kv.set("plugins:catalogue:lock", "held", ttl=600)
    finally:
        await store.close()
        await blobs.close()
        await kv.close()
    return Source(settings=settings, token=token, kept=kept)


async def every_memory(store: MemoryStore, uid: str) -> list[Memory]:
    return await store.list(uid, MemoryQuery(include_deleted=True, limit=1000))


async def every_key(kv: KeyValue) -> dict[str, Any]:
    """Each key with what it holds (string, list or hash), as the port reads it."""
    found: dict[str, Any] = {}
    for key in await kv.keys(""):
        if key.startswith("migrate:"):
            continue
        try:
            found[key] = await kv.get(key)
        except TypeError:
            try:
                found[key] = await kv.items(key)
            except TypeError:
                found[key] = await kv.hgetall(key)
    return found


async def assert_same(source: Source, production: Production, target: Settings) -> None:
    """The target holds exactly what the source holds."""
    before, after = build_memory_store(source.settings), build_memory_store(target)
    old_kv, new_kv = build_key_value(source.settings), build_key_value(target)
    old_blobs, new_blobs = build_blob_store(source.settings), build_blob_store(target)
    try:
        for uid in ("alice", "bob"):
            assert await every_memory(after, uid) == await every_memory(before, uid)
            assert await after.list_messages(uid) == await before.list_messages(uid)
        assert await after.uids() == ["alice", "bob"]
        assert set(production.pinecone.stored(production.namespace)) == source.kept
        assert await new_blobs.paths() == await old_blobs.paths()
        for path in await old_blobs.paths():
            assert await new_blobs.get(path) == await old_blobs.get(path)
        assert await every_key(new_kv) == await every_key(old_kv)
        assert (await new_kv.items("plugins:example:log")) == ["one", "two", "three"]  # not appended twice
        left = await new_kv.ttl("plugins:catalogue:lock")
        assert left is not None and 500 < left <= 600  # still expires
        assert await new_kv.ttl("users:alice:speech_profile_duration") is None
    finally:
        for adapter in (before, after, old_kv, new_kv, old_blobs, new_blobs):
            await adapter.close()


async def test_migrate_copies_everything_and_a_second_run_duplicates_nothing(
    production: Production,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = await fill_source(tmp_path / "data")
    envfile = tmp_path / "production.env"
    envfile.write_text("".join(f"{k}={v}\n" for k, v in production_env(production, tmp_path / "p").items()))
    target = Settings.from_env(environ={}, env_file=envfile)
    use_env(monkeypatch, tmp_path, {"OMI_DATA_DIR": str(tmp_path / "data")})

    assert await cli("migrate", "--to", str(envfile)) == 0
    err = capsys.readouterr().err
    assert f"copied {ALICE + BOB} memories of 2 users ({len(source.kept)} vectors), 3 messages" in err
    assert "2 blobs" in err and "users [" in err
    await assert_same(source, production, target)

    assert await cli("migrate", "--to", str(envfile)) == 0
    assert "nothing to do: already migrated" in capsys.readouterr().err
    await assert_same(source, production, target)

    assert await cli("migrate", "--to", str(envfile), "--restart") == 0  # everything again, by id
    assert f"copied {ALICE + BOB} memories" in capsys.readouterr().err
    await assert_same(source, production, target)

    # The production server serves alice's memories to the token she had on the embedded one.
    services = production_services(target, WHISPER)
    async with in_loop_client(create_app(target, services=services)) as client:
        headers = {"Authorization": f"Bearer {source.token}"}
        listed = (await client.get("/v1/memories?limit=500", headers=headers)).json()
        not_deleted = [n for n in range(ALICE) if n % 40 != 1]  # discarded ones are listed too
        assert len(listed) == len(not_deleted)
        found = await client.post("/v1/memories/search", json={"query": "About a100"}, headers=headers)
        assert found.json()[0]["id"] == "a100"


async def test_a_missing_or_bad_envfile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(monkeypatch, tmp_path, {"OMI_DATA_DIR": str(tmp_path / "data")})
    assert await cli("migrate", "--to", str(tmp_path / "missing.env")) == 2
    (tmp_path / "bad.env").write_text("OMI_VECTOR_INDEX=pinecone\n")
    assert await cli("migrate", "--to", str(tmp_path / "bad.env")) == 2
    err = capsys.readouterr().err
    assert "is not a file" in err and "PINECONE_API_KEY" in err


class FailingAfter:
    """A MemoryStore whose puts fail, as a vendor outage would, after ``budget`` of them."""

    def __init__(self, inner: MemoryStore, budget: int) -> None:
        self.inner, self.budget, self.puts = inner, budget, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put(self, uid: str, memory: Memory) -> None:
        self.puts += 1
        if self.puts > self.budget:
            raise BackendUnavailable("firestore", "deadline exceeded")
        await self.inner.put(uid, memory)


async def test_an_interrupted_migration_resumes_where_it_stopped(
    production: Production, tmp_path: Path
) -> None:
    source = await fill_source(tmp_path / "data")
    target_settings = production.settings(Settings(data_dir=tmp_path / "p"))
    services = production_services(target_settings, WHISPER)
    old_store = build_memory_store(source.settings)
    old = Backends(
        store=old_store, blobs=build_blob_store(source.settings), kv=build_key_value(source.settings)
    )
    try:
        failing = FailingAfter(services.store, budget=110)  # dies during alice's second page
        first = Backends(failing, services.blobs, services.kv, services.index, services.embedder)  # type: ignore[arg-type]
        with pytest.raises(BackendUnavailable):
            await migrate(old, first)
        assert await services.kv.hget(CHECKPOINT_KEY, "memories:alice") == "100"

        counting = FailingAfter(services.store, budget=10_000)
        second = Backends(counting, services.blobs, services.kv, services.index, services.embedder)  # type: ignore[arg-type]
        report = await migrate(old, second)
        assert counting.puts == ALICE - 100 + BOB  # the first page was not copied again
        assert report.memories == ALICE - 100 + BOB
        assert await services.kv.hget(CHECKPOINT_KEY, "memories:alice") == "done"
        await assert_same(source, production, target_settings)
    finally:
        await services.close()
        await old.store.close()
        await old.blobs.close()
        await old.kv.close()

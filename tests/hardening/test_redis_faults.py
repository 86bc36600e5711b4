"""Redis restarted under live sessions and webhook retries: nothing is lost.

Every test runs its own ``redis-server`` (:mod:`tests.hardening.redisproc`: a free port, a
temporary directory, AOF fsynced on every write) and kills it with SIGKILL mid-work, then
starts it again on the same port and directory; the shared Redis on 6379 is not touched.

- The adapter: an outage is ``BackendUnavailable`` for every call (never a ``redis``
  exception), the connections that died with the server are replaced on their own, a
  read-only replica (a failover) is an outage too, and the data survives the kill.
- Live sessions, on a real ``omi-backend serve`` process whose KeyValue is that Redis: three
  clients stream speech; Redis is down for two seconds mid-stream. During the outage REST
  answers 503 with JSON and ``/listen`` refuses with 1011 and a reason; the sessions carry
  on (results are held, not shown, until they are journalled). Two sessions end normally,
  then the server is killed under the third: every segment a client was shown is in its
  user's one memory, once, whether the session made it or the next start's recovery did.
- A longer outage (an app in a thread, results held for 1 s only): the session is closed
  with 1011 and a reason, reconnects are refused until Redis is back, and the reconnected
  session continues the same conversation: one memory with every segment shown, once.
- Webhook retries: queued deliveries survive a kill of Redis; a retry pass during the
  outage fails without harm; Redis dies again while the plugin server is answering a retry,
  and still each webhook-id is accepted by the receiver exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
import redis.asyncio
from litestar import Litestar
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.backends.file_blobs import FileBlobStore
from app.backends.minilm_embedder import MiniLMEmbedder
from app.backends.numpy_index import NumpyVectorIndex
from app.backends.redis_kv import RedisKeyValue
from app.backends.sqlite_store import SQLiteMemoryStore
from app.config import Settings
from app.core.errors import BackendUnavailable
from app.core.models import TranscriptSegment
from app.core.ports import SpeechToText
from app.core.services import Services
from app.core.structurer import RuleBasedLanguageModel
from app.core.tokens import TokenService
from app.main import create_app
from app.web.live import LiveFeed, LiveUpdate, build_channels
from builtin_plugins.omi_webhooks import QUEUE_KEY
from tests.api.conftest import WHISPER, Backends
from tests.api.listen_support import clip, encode, silence
from tests.api.test_webhooks import Clock, running
from tests.fakes.level_engine import RATE, LevelEngine
from tests.fakes.level_engine import tone as audio
from tests.fakes.plugin_server import FakePluginServer
from tests.hardening.redisproc import PrivateRedis, private_redis
from tests.serverproc import free_port, server, tail, wait_healthy
from tests.web.server import serving
from tests.wer import normalise

pytestmark = pytest.mark.anyio

DOWN_SECONDS = 2.0
HELD_SECONDS = 1.5  # at least this long a live result waits for Redis (the journal holds 15 s)
REASON = "redis is unavailable: the transcript cannot be saved, reconnect later"


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(threads=2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as started:
        yield started


async def kill(redis_server: PrivateRedis) -> None:
    await anyio.to_thread.run_sync(redis_server.stop)


async def start(redis_server: PrivateRedis) -> None:
    await anyio.to_thread.run_sync(redis_server.start)


async def make_tokens(url: str, *uids: str) -> dict[str, dict[str, str]]:
    kv = RedisKeyValue(url)
    try:
        tokens = TokenService(kv)
        return {uid: {"Authorization": f"Bearer {await tokens.create(uid)}"} for uid in uids}
    finally:
        await kv.close()


def redis_services(data_dir: Path, url: str, embedder: MiniLMEmbedder, stt: SpeechToText) -> Services:
    """The embedded adapters, but for the KeyValue port: Redis at ``url``."""
    return Services(
        store=SQLiteMemoryStore(data_dir / "memories.db"),
        index=NumpyVectorIndex(data_dir / "vectors.db"),
        blobs=FileBlobStore(data_dir / "blobs"),
        kv=RedisKeyValue(url),
        embedder=embedder,
        llm=RuleBasedLanguageModel(embedder),
        stt=stt,
    )


# -- the adapter ---------------------------------------------------------------------------


async def test_an_outage_is_unavailable_and_the_client_reconnects_on_its_own(
    redis_server: PrivateRedis,
) -> None:
    kv = RedisKeyValue(redis_server.url, prefix="t:")
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await kv.set("token", "alice")
        await kv.append("journal", "batch-1")
        # eight pooled connections, all idle when the server dies
        assert await asyncio.gather(*(kv.items("journal") for _ in range(8))) == [["batch-1"]] * 8
        await kill(redis_server)
        calls = [
            lambda: kv.get("token"),
            lambda: kv.set("x", "1"),
            lambda: kv.add("y", "1", ttl=5),
            lambda: kv.append("journal", "batch-2"),
            lambda: kv.hgetall("h"),
            lambda: kv.incr("n"),
            lambda: kv.keys(""),
            lambda: kv.ping(),
        ]
        for call in calls:
            with pytest.raises(BackendUnavailable) as caught:
                await call()
            assert caught.value.backend == "redis"
        await start(redis_server)
        # every connection of the pool died with the server; none is handed out broken
        assert await asyncio.gather(*(kv.get("token") for _ in range(8))) == ["alice"] * 8
        assert await kv.items("journal") == ["batch-1"]  # kept through the SIGKILL (AOF)
        await kv.set("n", "not a number")
        with pytest.raises(ValueError):  # a refused command is still the caller's error
            await kv.incr("n")
        # After a failover the old primary may be a replica: writes are refused, reads served.
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            with pytest.raises(BackendUnavailable, match="read only"):
                await kv.set("x", "1")
            assert await kv.get("token") == "alice"
        finally:
            await admin.execute_command("REPLICAOF", "NO", "ONE")
        await kv.set("x", "1")
    finally:
        await admin.aclose()
        await kv.close()


# -- the live page's feed (Litestar Channels over Redis pub/sub) -----------------------------


async def test_the_live_feed_outlives_a_redis_restart(redis_server: PrivateRedis) -> None:
    channels = build_channels(Settings(redis_url=redis_server.url))
    feed = LiveFeed(channels, prefix="t:")

    def line(text: str) -> list[TranscriptSegment]:
        return [TranscriptSegment(text=text, start=0.0, end=1.0)]

    await channels.__aenter__()
    try:
        async with asyncio.timeout(30):
            updates = feed.stream("alice", heartbeat=0.2)
            assert await anext(updates) is None  # subscribed
            feed.publish("alice", "s1", line("before"))
            assert await anext(updates) == LiveUpdate(session_id="s1", segments=line("before"))
            await kill(redis_server)
            feed.publish("alice", "s1", line("during"))  # lost for the page (the journal has it)
            await asyncio.sleep(0.5)
            await start(redis_server)
            texts: list[str] = []
            while "after" not in texts:  # subscribed again, and publishing again
                feed.publish("alice", "s1", line("after"))
                update = await anext(updates)
                if update is not None:
                    texts.append(update.segments[0].text)
            assert "during" not in texts
            await updates.aclose()
    finally:  # a dead publisher would leave its queue unfinished: the shutdown would never end
        closing = asyncio.create_task(channels.__aexit__(None, None, None))
        done, _ = await asyncio.wait({closing}, timeout=10)
        assert closing in done, "the channels' shutdown does not end"


# -- live sessions on a real server process ------------------------------------------------


@dataclass
class Client:
    """An Omi app streaming one recording in real time; it reconnects after a close, as the
    app does, and goes on with the rest of the recording."""

    uid: str
    auth: dict[str, str]
    frames: list[bytes]
    pace: float
    duration: float
    sent: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)  # unexpected closes by the server

    @property
    def words(self) -> list[str]:
        return normalise(" ".join(s["text"] for s in self.received))

    def covered(self) -> bool:
        """Whether the last words of the recording have arrived."""
        return bool(self.received) and self.received[-1]["end"] >= self.duration - 2.0


def client(uid: str, auth: dict[str, str], clip_name: str) -> Client:
    pcm = clip(clip_name)
    frames, pace = encode(pcm, "pcm16")
    return Client(uid, auth, frames, pace, len(pcm) / 32_000)


async def _collect(ws: ClientConnection, client: Client) -> None:
    async for message in ws:
        data = json.loads(message)
        if isinstance(data, list):
            client.received.extend(data)


async def stream(address: str, client: Client, *, hang_up: bool = True) -> None:
    """Send the recording, then two seconds of silence (so the last words end) and wait for
    the last words; then hang up, or (``hang_up=False``) stay until the server goes."""
    url = f"ws://{address}/listen?codec=pcm16&sample_rate=16000&language=en&uid={client.uid}"
    tail_frames, _ = encode(silence(2.0), "pcm16")
    while True:
        try:
            async with connect(url, additional_headers=client.auth, open_timeout=30) as ws:
                receiver = asyncio.create_task(_collect(ws, client))
                try:
                    while client.sent < len(client.frames):
                        await ws.send(client.frames[client.sent])
                        client.sent += 1
                        await asyncio.sleep(client.pace)
                    for frame in tail_frames:
                        await ws.send(frame)
                    if not hang_up:
                        await receiver  # raises once the server is gone
                    await until(client.covered, 90, f"{client.uid}'s last words")
                finally:
                    receiver.cancel()
                    await asyncio.gather(receiver, return_exceptions=True)
                return
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return  # the server died (the test killed it)
            client.closes.append((exc.rcvd.code, exc.rcvd.reason))
            await asyncio.sleep(0.5)


async def until(condition: Any, within: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {within} s: {what}")
        await asyncio.sleep(0.1)


async def memories_of(address: str, auth: dict[str, str], count: int = 1) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 60
        while True:
            response = await http.get(f"http://{address}/v1/memories", headers=auth)
            assert response.status_code == 200, response.text
            found: list[dict[str, Any]] = response.json()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)


def memory_words(memory: dict[str, Any]) -> list[str]:
    return normalise(" ".join(s["text"] for s in memory["transcript_segments"]))


async def check_outage_answers(address: str, auth: dict[str, str]) -> None:
    """While Redis is down: REST says 503 in JSON, ``/listen`` closes with 1011 and a reason."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{address}/v1/memories", headers=auth)
    assert response.status_code == 503, response.text
    assert response.json() == {"status_code": 503, "detail": "redis is unavailable, try again later"}
    url = f"ws://{address}/listen?codec=pcm16&sample_rate=16000"
    async with connect(url, additional_headers=auth) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    assert closed.value.rcvd.reason == "redis is unavailable, try again later"


@pytest.mark.slow
async def test_live_sessions_lose_nothing_when_redis_restarts_mid_stream(
    tmp_path: Path, redis_server: PrivateRedis
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    auth = await make_tokens(redis_server.url, "alice", "bob", "dave")
    alice, bob = client("alice", auth["alice"], "travel"), client("bob", auth["bob"], "lecture")
    env = {"REDIS_URL": redis_server.url, "OMI_WHISPER_WORKERS": "2", "OMI_INFERENCE_THREADS": "1"}
    with server(data_dir, log, env=env) as (proc, address):
        await wait_healthy(address, proc, log)
        # alice hangs up at the end; bob stays, and the server is killed under his session
        tasks = [
            asyncio.create_task(stream(address, alice)),
            asyncio.create_task(stream(address, bob, hang_up=False)),
        ]
        try:
            await until(lambda: bool(alice.received and bob.received) or any(t.done() for t in tasks))
            assert not any(t.done() for t in tasks), tail(log)
            shown_before = {"alice": len(alice.received), "bob": len(bob.received)}
            before = len(log.read_text())
            await kill(redis_server)
            down_at = time.monotonic()
            await check_outage_answers(address, auth["dave"])
            # down for at least DOWN_SECONDS, and until a result has waited for its journal a while
            await until(lambda: "journalling to" in log.read_text()[before:], 12, "a result held")
            await asyncio.sleep(max(HELD_SECONDS, DOWN_SECONDS - (time.monotonic() - down_at)))
            await start(redis_server)
            await asyncio.wait_for(tasks[0], 120)
            await until(lambda: bob.covered() or tasks[1].done(), 90, "bob's last words")
        finally:
            tasks[0].cancel()
        held = [line for line in log.read_text()[before:].splitlines() if "journalling to" in line]
        assert any("holding for up to" in line for line in held), held
        assert any("done after" in line for line in held), held  # then written, and shown
        for each in (alice, bob):  # the sessions went on (or were resumed) after the outage
            assert len(each.received) > shown_before[each.uid], each.uid
            assert all(code == 1011 and reason for code, reason in each.closes), each.closes
        (memory,) = await memories_of(address, alice.auth)
        # every segment she was shown, once and in order (the engine's last words may follow)
        kept = memory_words(memory)
        assert kept[: len(alice.words)] == alice.words, (kept, alice.words)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)  # bob's session is open: his journal is all there is
        proc.wait()
        await asyncio.wait_for(tasks[1], 30)  # it keeps what was in flight, until the socket dies
    first_run = log.read_text()
    for sign in (" 500 ", "background task failed", "the journal stays open", "Traceback"):
        assert sign not in first_run, tail(log)
    with server(data_dir, log, env=env) as (proc, address):
        await wait_healthy(address, proc, log)
        (memory,) = await memories_of(address, bob.auth)
        assert memory_words(memory) == bob.words  # all he saw, nothing else, once
        assert memory["transcript_segments"][0]["start"] == bob.received[0]["start"]
        # made at start-up, before /health answered: bob's from his journal, no second of alice's
        assert len(await memories_of(address, alice.auth)) == 1
    assert "finished 1 live-session memories left open" in log.read_text()[len(first_run) :]


# -- a longer outage: the session closes and the client resumes ----------------------------


@pytest.fixture
def held_app(tmp_path: Path, redis_server: PrivateRedis, embedder: MiniLMEmbedder) -> Litestar:
    """An app on Redis whose live sessions hold a result for 1 s, with the scripted engine."""
    settings = Settings(data_dir=tmp_path / "data", redis_url=redis_server.url)
    services = redis_services(
        settings.data_dir, redis_server.url, embedder, LevelEngine(two_speakers=True, sample_rate=RATE)
    )
    app = create_app(settings, services=services)
    app.state.listen.journals.hold_seconds = 1.0
    return app


async def receive_segments(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while len(found) < count:
            message = json.loads(await ws.recv())
            if isinstance(message, list):
                found.extend(message)
    return found


async def test_a_longer_outage_closes_the_session_and_the_reconnected_client_resumes_it(
    redis_server: PrivateRedis, held_app: Litestar
) -> None:
    auth = (await make_tokens(redis_server.url, "alice"))["alice"]
    with serving(held_app) as served:
        url = served.url.replace("http://", "ws://") + "/listen?codec=pcm16&sample_rate=16000"
        async with connect(url, additional_headers=auth) as ws:
            await ws.send(audio(3, 4, 0))
            shown = await receive_segments(ws, 2)
            await kill(redis_server)
            await ws.send(audio(5, 0))  # a result that cannot be journalled
            with pytest.raises(ConnectionClosed) as closed:
                await receive_segments(ws, 1)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011
        assert closed.value.rcvd.reason == REASON
        async with connect(url, additional_headers=auth) as ws:  # the app reconnects at once
            with pytest.raises(ConnectionClosed) as refused:
                await ws.recv()
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1011
        await start(redis_server)
        async with connect(url, additional_headers=auth) as ws:
            await ws.send(audio(6, 0))
            shown += await receive_segments(ws, 1)
        async with httpx.AsyncClient(base_url=served.url) as http:
            deadline = time.monotonic() + 30
            while True:
                memories = (await http.get("/v1/memories", headers=auth)).json()
                words = " ".join(s["text"] for m in memories for s in m["transcript_segments"]).split()
                if words == ["w3", "w4", "w6"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
    assert [(s["text"], s["start"]) for s in shown] == [("w3", 0.0), ("w4", 0.5), ("w6", 2.5)]
    # one conversation, resumed where it stopped (after the 2.5 s of the first connection);
    # w5, held and never shown, is not in it
    (memory,) = memories
    assert " ".join(s["text"] for s in memory["transcript_segments"]).split() == ["w3", "w4", "w6"]
    assert memory["transcript_segments"][-1]["end"] == 3.0


# -- webhook retries -----------------------------------------------------------------------


class KillingPluginServer(FakePluginServer):
    """A fake plugin server that, once armed, kills Redis when a request arrives (before it
    answers) and starts it again ``down_for`` seconds later."""

    def __init__(self, redis_server: PrivateRedis, down_for: float = 1.0) -> None:
        super().__init__()
        self.redis_server = redis_server
        self.down_for = down_for
        self.armed = False
        self.back = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.armed:
            self.armed = False
            self.redis_server.stop()
            threading.Timer(self.down_for, self._restart).start()
        await super().__call__(scope, receive, send)

    def _restart(self) -> None:
        self.redis_server.start()
        self.back.set()


@pytest.fixture
def plugin_server(redis_server: PrivateRedis) -> Iterator[KillingPluginServer]:
    fake = KillingPluginServer(redis_server)
    fake.start()
    yield fake
    fake.stop()


async def test_queued_webhooks_are_delivered_once_each_through_redis_restarts(
    tmp_path: Path,
    redis_server: PrivateRedis,
    plugin_server: KillingPluginServer,
    embedder: MiniLMEmbedder,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        redis_url=redis_server.url,
        webhook_allow_private=True,
        webhook_connect_timeout=1.0,
        webhook_read_timeout=1.0,
        plugin_timeout=5.0,
    )
    backends = Backends(
        "private-redis",
        lambda s: (s, redis_services(s.data_dir, redis_server.url, embedder, WHISPER)),
    )
    clock = Clock()
    plugin_server.mode = "fail"
    async with running(settings, backends, plugin_server, clock) as h:
        for name in ("standup", "doctor", "travel"):
            await h.create(name)
        queued = await h.queue()
        assert len(queued) == 3 and {d.attempt for d in queued.values()} == {1}

        await kill(redis_server)
        with pytest.raises(BackendUnavailable):  # a retry pass while Redis is down
            await h.process_due()
        h.plugin._wake.set()  # the background task meets the outage too, and goes on
        await asyncio.sleep(1.5)
        assert h.plugin._worker is not None and not h.plugin._worker.done()
        await start(redis_server)
        assert await h.queue() == queued  # the queue went through the SIGKILL

        plugin_server.mode = "ok"
        plugin_server.armed = True  # Redis dies while the first retry is being answered
        h.plugin._parallel = asyncio.Semaphore(1)  # one attempt at a time: the first is the one
        clock.advance(10)
        await h.process_due()
        # Redis was killed and started again (the store may reconnect before start() returns)
        assert await asyncio.to_thread(plugin_server.back.wait, 10)
        for _ in range(10):
            if not await h.queue():
                break
            clock.advance(10)
            await h.process_due()
            await asyncio.sleep(0.2)
        clock.advance(2 * 86_400)
        await h.process_due()

        assert await h.queue() == {}
        assert plugin_server.accepted() == dict.fromkeys(queued, 1)  # once per webhook-id
        requests = plugin_server.requests()
        assert sorted(r.webhook_id for r in requests) == sorted([*queued, *queued])  # 1 failure, 1 success
        assert all(r.signature_ok for r in requests)
        messages = (await h.client.get("/v1/messages", headers=h.alice)).json()
        assert sorted(m["id"] for m in messages) == sorted(queued)  # each reply stored once
        assert await h.services.kv.keys("webhooks:claim:") == []
        assert await h.services.kv.hgetall(QUEUE_KEY) == {}

"""``/listen`` refusals: each one is a close with a code and a reason, and touches nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.backends.minilm_embedder import MiniLMEmbedder
from tests.api.conftest import Api
from tests.api.listen_support import (
    CORPUS,
    Listener,
    clip,
    encode,
    listen_app,
    listen_query,
    memory_text,
    silence,
    wait_for_memories,
)
from tests.wer import wer

pytestmark = pytest.mark.anyio


async def close_of(
    api: Api, params: dict[str, str], headers: dict[str, str], *frames: bytes | str
) -> tuple[int, str]:
    """Connect, send ``frames`` (text for ``str``), and return how the server closed."""
    with await api.client.websocket_connect("/listen", params=params, headers=headers) as ws:
        listener = Listener(ws)
        for frame in frames:
            if isinstance(frame, str):
                ws.send_text(frame)
            else:
                ws.send_bytes(frame)
        return await listener.close_code(within=30)


async def test_credentials_are_checked_and_refusals_are_1008_with_a_reason(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    async with listen_app(tmp_path, embedder, listen_ping_seconds=0.2) as api:
        query = listen_query()
        token = api.alice["Authorization"].removeprefix("Bearer ")
        refused = [
            (query, {}),
            (query, {"Authorization": "Bearer omi_not_a_token"}),
            ({**query, "token": "omi_not_a_token"}, {}),
            ({**query, "uid": "bob"}, api.alice),
            ({**query, "uid": "bob", "token": token}, {}),
        ]
        reasons = []
        for params, headers in refused:
            code, reason = await close_of(api, params, headers)
            assert code == 1008, (params, headers)
            reasons.append(reason)
        assert reasons[:3] == [
            "missing Authorization header",
            "invalid or revoked token",
            "invalid or revoked token",
        ]
        assert set(reasons[3:]) == {"the uid parameter does not match the credentials"}
        # the header, or the token parameter (browsers), with or without a matching uid
        for params, headers in [
            (query, api.alice),
            ({**query, "uid": "alice"}, api.alice),
            ({**query, "token": token, "uid": "alice"}, {}),
        ]:
            with await api.client.websocket_connect("/listen", params=params, headers=headers) as ws:
                assert await Listener(ws).receive(within=10) == {"type": "ping"}


async def test_bad_parameters_and_frames_close_that_session_only(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    async with listen_app(tmp_path, embedder, listen_ping_seconds=0.5) as api:
        good_frames, _ = encode(clip("grocery") + silence(1.0), "opus")
        with await api.client.websocket_connect(
            "/listen", params=listen_query("opus"), headers=api.alice
        ) as ws:
            good = Listener(ws)
            await good.send(good_frames[: len(good_frames) // 2])
            pcm16, pcm8, opus = listen_query("pcm16"), listen_query("pcm8"), listen_query("opus")
            cases = [
                (pcm16, ["not audio"], 1003),
                (opus, [b"\xff\xff\xff"], 1007),
                (opus, [b"garbage!"], 1007),
                (pcm16, [b"\x00\x01\x02"], 1007),
                (pcm8, [bytes(320), b"\x00"], 1007),
                ({**pcm16, "codec": "mp3"}, [], 1003),
                ({**pcm16, "sample_rate": "123456"}, [], 1003),
                ({**opus, "sample_rate": "44100"}, [], 1003),
                ({**pcm16, "channels": "2"}, [], 1003),
                ({**pcm16, "language": "xx"}, [], 1003),
                ({**pcm16, "sample_rate": "abc"}, [], 1008),
                ({**pcm16, "new_memory_watch": "maybe"}, [], 1008),
                (pcm16, [bytes(1_000_000)], 1009),
                (pcm16, [bytes(64 * 1024 + 2)], 1009),
            ]
            for params, frames, expected in cases:
                code, reason = await close_of(api, params, api.bob, *frames)
                assert (code, bool(reason)) == (expected, True), (params, code, reason)
                assert len(reason.encode()) <= 123
            # the good session went on all along
            await good.send(good_frames[len(good_frames) // 2 :])
            await good.until(lambda got: len(got.segments) >= 2, within=60)
            assert {"type": "ping"} in [m for _, m in good.messages]
        (memory,) = await wait_for_memories(api, api.alice)
        assert wer(CORPUS["grocery"]["text"], memory_text(memory)) <= 0.25
        # bob's refused sessions made nothing
        assert await wait_for_memories(api, api.bob, count=0) == []


async def test_what_was_said_before_a_bad_frame_still_becomes_a_memory(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    async with listen_app(tmp_path, embedder) as api:
        frames, _ = encode(clip("short") + silence(1.0), "pcm16")
        with await api.client.websocket_connect("/listen", params=listen_query(), headers=api.alice) as ws:
            listener = Listener(ws)
            await listener.send(frames)
            await listener.until(lambda got: bool(got.segments), within=30)
            ws.send_text("oops")
            assert (await listener.close_code())[0] == 1003
        (memory,) = await wait_for_memories(api, api.alice)
        assert memory_text(memory) == listener.text

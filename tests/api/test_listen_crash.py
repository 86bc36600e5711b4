"""Crash safety with a real server process: what the client was shown survives a SIGKILL.

``omi-backend serve`` runs in a subprocess on a temporary data dir; a real WebSocket client
(the ``websockets`` package) streams half a clip, and once segments have arrived the server
is killed with SIGKILL. Started again on the same data dir, it finishes the open journal: the
memory exists and holds every segment the client received.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api.listen_support import clip, encode
from tests.serverproc import make_token, server, tail, wait_healthy
from tests.wer import normalise

pytestmark = pytest.mark.anyio


async def drain(ws: ClientConnection, received: list[dict[str, Any]]) -> None:
    """Keep what was in flight when the server died, until the connection is gone."""
    while True:
        message = json.loads(await ws.recv())
        if isinstance(message, list):
            received.extend(message)


@pytest.mark.slow
async def test_a_killed_server_finishes_the_memory_on_its_next_start(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    token = await make_token(data_dir, "alice")
    auth = {"Authorization": f"Bearer {token}"}
    pcm = clip("standup")
    frames, pace = encode(pcm[: len(pcm) // 2], "pcm16")  # half the clip, 13 s
    received: list[dict[str, Any]] = []
    with server(data_dir, log) as (proc, address):
        await wait_healthy(address, proc, log)
        url = f"ws://{address}/listen?codec=pcm16&sample_rate=16000&language=en&uid=alice"
        async with connect(url, additional_headers=auth) as ws:

            async def send() -> None:
                for frame in frames:
                    await ws.send(frame)
                    await asyncio.sleep(pace / 4)  # four times real time

            sender = asyncio.create_task(send())
            try:
                async with asyncio.timeout(60):
                    while len(received) < 2:
                        message = json.loads(await ws.recv())
                        if isinstance(message, list):
                            received.extend(message)
            finally:
                os.kill(proc.pid, signal.SIGKILL)  # mid-stream, no shutdown of any kind
                proc.wait()
                sender.cancel()
            with pytest.raises(ConnectionClosed):
                await drain(ws, received)
    assert received
    with server(data_dir, log) as (proc, address):
        await wait_healthy(address, proc, log)
        async with httpx.AsyncClient() as client:
            memories = (await client.get(f"http://{address}/v1/memories", headers=auth)).json()
    (memory,) = memories
    shown = normalise(" ".join(s["text"] for s in received))
    kept = normalise(" ".join(s["text"] for s in memory["transcript_segments"]))
    assert kept == shown  # every segment the client saw, and nothing it did not
    assert memory["transcript_segments"][0]["start"] == received[0]["start"]
    assert "finished 1 live-session memories left open" in tail(log)

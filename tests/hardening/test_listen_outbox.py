"""The outbox of a live session: in order, never waiting on the client, bounded for one that does not read.

The socket is a scripted one: ``write`` can be made to take its messages, or to hang as
uvicorn's ``send`` does while the peer's receive window is shut. The real socket is covered
by ``test_listen_fuzz.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from app.core.listen_outbox import NOT_READING, Outbox

pytestmark = pytest.mark.anyio

TOO_MUCH = (NOT_READING, "the client is not reading: over 1000 characters of messages waiting")


class Socket:
    def __init__(self) -> None:
        self.written: list[str] = []
        self.closes: list[tuple[int, str]] = []
        self.reading = asyncio.Event()  # cleared: the client does not read, writes hang
        self.reading.set()
        self.gone = False
        self.wrote = asyncio.Event()

    async def write(self, text: str) -> None:
        await self.reading.wait()
        if self.gone:
            raise ConnectionError("gone")
        await asyncio.sleep(0)
        self.written.append(text)
        self.wrote.set()

    async def close(self, code: int, reason: str) -> None:
        await self.reading.wait()
        self.closes.append((code, reason))


def outbox(socket: Socket, **options: float) -> Outbox:
    return Outbox(socket.write, socket.close, **{"timeout": 0.5, "close_wait": 0.5, **options})  # type: ignore[arg-type]


async def test_messages_go_out_in_order_and_the_close_comes_after_them() -> None:
    socket = Socket()
    box = outbox(socket)
    for index in range(2000):  # a burst never waits on the socket, nor drops a message
        await box.send_text(f"m{index}")
    await box.close(1003, "text frames are not accepted")
    assert socket.written == [f"m{index}" for index in range(2000)]
    assert socket.closes == [(1003, "text frames are not accepted")]
    assert not box.refused.done()
    with pytest.raises(ConnectionError):
        await box.send_text("late")


async def test_a_client_that_reads_late_gets_everything() -> None:
    socket = Socket()
    box = outbox(socket, timeout=30.0)
    socket.reading.clear()
    for index in range(100):
        await box.send_text(f"m{index}")  # returns at once although nothing can be written
    assert box.queued == sum(len(f"m{index}") for index in range(100))
    socket.reading.set()
    await box.close(1000, "bye")
    assert len(socket.written) == 100 and socket.closes == [(1000, "bye")]
    assert box.queued == 0


async def test_a_message_the_client_does_not_take_in_time_gives_it_up() -> None:
    socket = Socket()
    box = outbox(socket, timeout=0.2, close_wait=5.0)
    await box.send_text("first")
    await asyncio.wait_for(socket.wrote.wait(), 5)
    socket.reading.clear()
    await box.send_text("stuck")
    code, reason = await asyncio.wait_for(box.refused, 10)
    assert (code, reason) == (NOT_READING, "the client is not reading: a message waited over 0.2 s")
    with pytest.raises(ConnectionError):
        await box.send_text("more")
    socket.reading.set()  # it reads at last: the close frame, and nothing after "first"
    await box.close(1000, "ignored: the refusal's close comes first")
    assert socket.written == ["first"]
    assert socket.closes == [(NOT_READING, reason)]


async def test_too_much_waiting_gives_the_client_up_at_once() -> None:
    socket = Socket()
    box = outbox(socket, timeout=60.0, limit=1000)
    socket.reading.clear()
    await box.send_text("x" * 600)
    with pytest.raises(ConnectionError):
        await box.send_text("y" * 600)
    assert box.refused.result() == TOO_MUCH
    assert box.queued == 0  # what it would not read is let go
    socket.reading.set()
    await box.close(1000, "")
    assert socket.closes == [TOO_MUCH]


async def test_close_is_bounded_when_the_close_frame_cannot_be_written() -> None:
    socket = Socket()
    box = outbox(socket, timeout=0.1, close_wait=0.3)
    socket.reading.clear()
    await box.send_text("stuck")
    await box.close(1008, "no audio")  # returns, although nothing could be written
    assert socket.written == [] and socket.closes == []
    assert box.refused.done()


async def test_a_client_gone_stops_the_writer() -> None:
    socket = Socket()
    box = outbox(socket)
    socket.gone = True
    await box.send_text("lost")
    await box.close(1000, "")  # the writer has stopped: returns at once, nothing written
    assert socket.written == [] and socket.closes == []
    with pytest.raises(ConnectionError):
        await box.send_text("more")
    await box.discard()

"""The production :class:`~app.core.ports.SpeechToText`: Deepgram live streaming (listen v1).

One WebSocket per stream, opened through ``deepgram-sdk``'s async client with the contract's
options (OMI_CONTRACT.md section 4). A stream's supervisor task owns the connection: a writer
sends the audio in order (and a ``KeepAlive`` after ``keepalive_interval`` seconds without
audio), a reader turns each final ``Results`` message into segments.

Audio not yet covered by a final result ("unacknowledged") stays buffered. When the connection
drops before the stream is finished, a new one is opened, the unacknowledged audio is replayed
and the new connection's times are offset by the audio already acknowledged, so the caller sees
neither a gap nor a duplicate. Consecutive failures are bounded (``max_retries``, exponential
backoff); past them the stream fails and ``send``/``finish`` raise
:class:`~app.core.errors.BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

from app.core.errors import BackendUnavailable
from app.core.models import TranscriptSegment
from app.core.ports import SegmentsCallback

with warnings.catch_warnings():
    # deepgram-sdk 7 opens async sockets with websockets' deprecated legacy client and imports
    # the deprecated ``InvalidStatusCode`` alias; each warns once, when these modules load.
    _DEPRECATED = r"websockets\.(legacy|exceptions\.InvalidStatusCode)"
    warnings.filterwarnings("ignore", _DEPRECATED, DeprecationWarning)
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
    from deepgram.core.api_error import ApiError
    from deepgram.listen.v1.client import AsyncV1Client
    from deepgram.listen.v1.socket_client import AsyncV1SocketClient
    from deepgram.listen.v1.types import (
        ListenV1Error,
        ListenV1Metadata,
        ListenV1Results,
        ListenV1ResultsChannelAlternativesItemWordsItem,
    )

__all__ = ["DeepgramSpeechToText", "DeepgramStream", "words_to_segments"]

logger = logging.getLogger(__name__)

Word = ListenV1ResultsChannelAlternativesItemWordsItem
_FRAME_SECONDS = 0.25  # the largest audio frame sent at once (replays are cut into these)
_RETRYABLE_STATUS = frozenset({408, 429})


def words_to_segments(words: Sequence[Word], offset: float) -> list[TranscriptSegment]:
    """Group consecutive words by speaker into segments, shifting their times by ``offset``."""
    segments: list[TranscriptSegment] = []
    run: list[Word] = []
    for word in words:
        if run and (word.speaker or 0) != (run[0].speaker or 0):
            segments.append(_segment(run, offset))
            run = []
        run.append(word)
    if run:
        segments.append(_segment(run, offset))
    return [s for s in segments if s.text]


def _segment(run: list[Word], offset: float) -> TranscriptSegment:
    start = round(max(0.0, offset + run[0].start), 3)
    end = round(max(start, offset + run[-1].end), 3)
    text = " ".join(t for t in ((w.punctuated_word or w.word).strip() for w in run) if t)
    return TranscriptSegment(text=text, speaker=f"SPEAKER_{run[0].speaker or 0}", start=start, end=end)


def _describe_close(exc: ConnectionClosed) -> str:
    close = exc.rcvd
    if close is None:
        return "closed without a close frame"
    return f"code {close.code}" + (f" ({close.reason})" if close.reason else "")


@dataclass
class _Outcome:
    """How one connection ended."""

    done: bool = False  # closed by Deepgram after our CloseStream: the stream is complete
    progressed: bool = False  # at least one final result arrived
    reason: str = "closed"


class DeepgramSpeechToText:
    """Deepgram live transcription behind the :class:`~app.core.ports.SpeechToText` port.

    Args:
        api_key: The Deepgram API key (sent as ``Authorization: Token <key>``).
        environment: Where to connect; ``DeepgramClientEnvironment.PRODUCTION`` by default.
        model: The Deepgram model.
        keepalive_interval: Seconds without audio after which a ``KeepAlive`` is sent.
        finish_timeout: Seconds ``finish()`` waits for the last results and ``Metadata``.
        max_retries: Reconnect attempts after a failure (a drop or a refused connection) before
            the stream fails; the count restarts once a connection delivers a final result.
        retry_backoff: First delay between reconnects, doubled after each failure (at most 5 s).
        max_unacknowledged: Seconds of sent audio kept for replay while awaiting final results.
    """

    def __init__(
        self,
        api_key: str,
        environment: DeepgramClientEnvironment | None = None,
        *,
        model: str = "nova-3",
        keepalive_interval: float = 5.0,
        finish_timeout: float = 10.0,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
        max_unacknowledged: float = 120.0,
    ) -> None:
        self._http = httpx.AsyncClient(timeout=30.0)
        self._client = AsyncDeepgramClient(
            api_key=api_key,
            environment=environment or DeepgramClientEnvironment.PRODUCTION,
            httpx_client=self._http,
        )
        self._model = model
        self.keepalive_interval = keepalive_interval
        self.finish_timeout = finish_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_unacknowledged = max_unacknowledged
        self._streams: set[DeepgramStream] = set()

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> DeepgramStream:
        """Connect a new stream; raises :class:`BackendUnavailable` when Deepgram cannot be reached."""
        stream = DeepgramStream(self, language=language, sample_rate=sample_rate, on_segments=on_segments)
        self._streams.add(stream)
        try:
            await stream.connected()
        except BaseException:
            await stream.close()
            raise
        return stream

    async def close(self) -> None:
        """Abort the streams still open and release the HTTP client."""
        for stream in list(self._streams):
            await stream.close()
        await self._http.aclose()

    @asynccontextmanager
    async def _socket(self, language: str, sample_rate: int) -> AsyncIterator[AsyncV1SocketClient]:
        listen: AsyncV1Client = self._client.listen.v1
        async with listen.connect(
            model=self._model,
            language=language,
            encoding="linear16",
            sample_rate=sample_rate,
            channels=1,
            punctuate="true",
            smart_format="true",
            diarize="true",
            interim_results="false",
            endpointing=100,
            # ``no_delay`` is a documented option the SDK's connect() has no parameter for.
            request_options={"additional_query_parameters": {"no_delay": "true"}},
        ) as socket:
            yield socket


class DeepgramStream:
    """One live transcription on Deepgram; see the module docstring for the reconnect rules."""

    def __init__(
        self, engine: DeepgramSpeechToText, *, language: str, sample_rate: int, on_segments: SegmentsCallback
    ) -> None:
        self._engine = engine
        self._language = language
        self._sample_rate = sample_rate
        self._bytes_per_second = sample_rate * 2
        self._on_segments = on_segments
        # Byte positions on the stream's timeline: everything sent to send(), everything covered
        # by a final result, and what the current connection has been sent (it began at _base).
        self._total = self._acked = self._sent = self._base = 0
        self._pending = bytearray()  # audio from _acked to _total
        self._wake = asyncio.Event()
        self._finishing = self._close_sent = self._closed = False
        self._error: BackendUnavailable | None = None
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connections = 0
        self.keepalives_sent = 0
        self.metadata: ListenV1Metadata | None = None
        self._task = asyncio.create_task(self._run(), name="deepgram-stream")

    async def connected(self) -> None:
        """Wait until the first connection is open (or has failed for good)."""
        await asyncio.shield(self._connected)

    async def send(self, pcm: bytes) -> None:
        """Buffer ``pcm`` for the writer; raises once the stream has failed or ended."""
        if self._error is not None:
            raise self._error
        if self._finishing or self._closed:
            raise BackendUnavailable("deepgram", "send() after the stream was finished or closed")
        if not pcm:
            return
        self._pending += pcm
        self._total += len(pcm)
        # Bound the replay buffer: forget the oldest audio already sent but still unacknowledged.
        excess = min(
            len(self._pending) - int(self._engine.max_unacknowledged * self._bytes_per_second),
            self._sent - self._acked,
        )
        if excess > 0:
            logger.warning("deepgram: %d unacknowledged bytes dropped from the replay buffer", excess)
            self._acknowledge_bytes(self._acked + excess)
        self._wake.set()

    async def finish(self) -> None:
        """Send ``CloseStream``, deliver the remaining results and wait for the connection to end."""
        if not self._closed and not self._task.done():
            self._finishing = True
            self._wake.set()
            timeout = self._engine.finish_timeout
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._task)
            except TimeoutError:
                await self.close()
                raise BackendUnavailable(
                    "deepgram", f"no final results and Metadata within {timeout:g} s of CloseStream"
                ) from None
        await self.close()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Abort: drop the connection and whatever has not been recognised."""
        self._closed = True
        self._engine._streams.discard(self)
        if not self._connected.done():
            self._connected.set_exception(BackendUnavailable("deepgram", "stream closed while connecting"))
            self._connected.exception()  # retrieved: whoever waited for it was cancelled (or gets it too)
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)

    # -- the supervisor --------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with self._engine._socket(self._language, self._sample_rate) as socket:
                    self.connections += 1
                    if not self._connected.done():
                        self._connected.set_result(None)
                    outcome = await self._pump(socket)
                if outcome.done:
                    return
                reason = outcome.reason
                failures = 0 if outcome.progressed else failures
            except ApiError as exc:
                status = exc.status_code or 0
                reason = f"HTTP {status}: {exc.body}"
                if 400 <= status < 500 and status not in _RETRYABLE_STATUS:
                    self._fail(f"Deepgram refused the connection ({reason})")
                    return
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            failures += 1
            if failures > self._engine.max_retries:
                self._fail(f"{failures} consecutive connection failures; last: {reason}")
                return
            delay = min(self._engine.retry_backoff * 2 ** (failures - 1), 5.0)
            logger.warning("deepgram: %s; reconnecting in %.2f s (attempt %d)", reason, delay, failures)
            await asyncio.sleep(delay)

    def _fail(self, message: str) -> None:
        logger.error("deepgram: stream failed: %s", message)
        self._error = BackendUnavailable("deepgram", message)
        if not self._connected.done():
            self._connected.set_exception(self._error)

    async def _pump(self, socket: AsyncV1SocketClient) -> _Outcome:
        """Run one connection: replay from the last acknowledged byte, then stream until it ends."""
        self._base = self._sent = self._acked
        self._close_sent = False
        outcome = _Outcome()
        reader = asyncio.create_task(self._read(socket, outcome))
        writer = asyncio.create_task(self._write(socket, outcome))
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done() and writer.result():
                await reader  # CloseStream went out: read the last results until Deepgram closes
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        return outcome

    async def _write(self, socket: AsyncV1SocketClient, outcome: _Outcome) -> bool:
        """Send audio in order, KeepAlive when idle, CloseStream once finishing; False on failure."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        frame = max(2, int(_FRAME_SECONDS * self._bytes_per_second) // 2 * 2)
        try:
            while True:
                if self._sent < self._total:
                    start = self._sent - self._acked
                    chunk = bytes(self._pending[start : start + frame])
                    await socket.send_media(chunk)
                    self._sent += len(chunk)
                    last = loop.time()
                elif self._finishing:
                    await socket.send_close_stream()
                    self._close_sent = True
                    return True
                else:
                    self._wake.clear()
                    idle = max(0.0, last + self._engine.keepalive_interval - loop.time())
                    try:
                        async with asyncio.timeout(idle):
                            await self._wake.wait()
                    except TimeoutError:
                        await socket.send_keep_alive()
                        self.keepalives_sent += 1
                        last = loop.time()
        except Exception as exc:
            outcome.reason = f"send failed: {type(exc).__name__}: {exc}"
            return False

    async def _read(self, socket: AsyncV1SocketClient, outcome: _Outcome) -> None:
        """Deliver final results until the connection closes; record how it ended."""
        offset = self._base / self._bytes_per_second
        try:
            while True:
                message = await socket.recv()
                if isinstance(message, ListenV1Results):
                    if message.is_final:
                        outcome.progressed = True
                        await self._on_results(message, offset)
                elif isinstance(message, ListenV1Metadata):
                    self.metadata = message
                elif isinstance(message, ListenV1Error):
                    logger.warning("deepgram: error message: %s: %s", message.variant, message.description)
        except ConnectionClosedOK as exc:
            outcome.done = self._close_sent
            outcome.reason = f"closed by Deepgram before CloseStream: {_describe_close(exc)}"
        except ConnectionClosed as exc:
            outcome.reason = f"connection lost: {_describe_close(exc)}"
        except Exception as exc:
            outcome.reason = f"receive failed: {type(exc).__name__}: {exc}"

    async def _on_results(self, message: ListenV1Results, offset: float) -> None:
        alternatives = message.channel.alternatives
        segments = words_to_segments(alternatives[0].words if alternatives else [], offset)
        end = offset + message.start + message.duration
        self._acknowledge_bytes(min(round(end * self._sample_rate) * 2, self._sent))
        if segments:
            try:
                await self._on_segments(segments)
            except Exception:
                logger.exception("deepgram: the segments callback failed")

    def _acknowledge_bytes(self, position: int) -> None:
        if position > self._acked:
            del self._pending[: position - self._acked]
            self._acked = position

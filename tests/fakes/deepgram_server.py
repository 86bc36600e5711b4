"""A fake Deepgram live-transcription server (``/v1/listen``) that the real SDK connects to.

It speaks the documented streaming protocol: the options arrive as query parameters, the key as
``Authorization: Token <key>`` (a wrong key gets an HTTP 401 at the handshake); binary frames
carry audio; text frames carry ``KeepAlive``, ``Finalize`` and ``CloseStream``. The words come
from any :class:`~app.core.ports.SpeechToText` engine run on the received audio: each batch of
final segments becomes one ``Results`` message (``is_final``/``speech_final`` true), the results
covering consecutive ranges of audio. ``CloseStream`` flushes the engine, sends the last
``Results`` and a ``Metadata`` message, then closes normally. Without audio or ``KeepAlive`` for
``idle_timeout`` seconds the socket closes with 1011 ``NET-0001``, as Deepgram's does.

Test controls: ``connections`` records each accepted socket (query, headers, audio, messages);
``drop_after(seconds)`` aborts (no close frame) the first connection to receive that much
audio; ``refuse_status`` rejects every handshake with that HTTP status; ``hang`` accepts and
reads but never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from deepgram import DeepgramClientEnvironment
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.core.models import TranscriptSegment
from app.core.ports import SpeechStream, SpeechToText

__all__ = ["ConnectionRecord", "FakeDeepgram"]

MODEL_UUID = "1dbdfb4d-85b2-4659-9831-16b3c76229aa"
MODEL_INFO = {"name": "2-general-nova", "version": "2024-01-18.26916", "arch": "nova-3"}
ENCODINGS = {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "speex", "g729"}
_NON_WORD = re.compile(r"[^\w']+")


@dataclass
class ConnectionRecord:
    """What one accepted connection received and how it ended."""

    query: dict[str, str]
    headers: dict[str, str]
    request_id: str
    audio_bytes: int = 0
    messages: list[str] = field(default_factory=list)  # the text messages' types, in order
    sent: list[dict[str, Any]] = field(default_factory=list)  # the JSON messages sent
    close_code: int | None = None
    close_reason: str = ""
    dropped: bool = False


class FakeDeepgram:
    """The fake server; ``async with FakeDeepgram(engine) as server`` listens on 127.0.0.1.

    Args:
        engine: Recognises the audio; one stream is opened per connection.
        api_key: The only key accepted.
        idle_timeout: Seconds without audio or KeepAlive before the 1011 ``NET-0001`` close.
    """

    def __init__(
        self, engine: SpeechToText, *, api_key: str = "test-key", idle_timeout: float = 10.0
    ) -> None:
        self.engine = engine
        self.api_key = api_key
        self.idle_timeout = idle_timeout
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[int] = []  # HTTP statuses of refused handshakes
        self.refuse_status: int | None = None
        self.hang = False
        self._drop_seconds: float | None = None
        self._server: Server | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Deepgram server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    @property
    def environment(self) -> DeepgramClientEnvironment:
        """The SDK environment that points every Deepgram client at this server."""
        http = self.url.replace("ws://", "http://")
        return DeepgramClientEnvironment(base=http, production=self.url, agent=self.url, agent_rest=http)

    def drop_after(self, seconds: float) -> None:
        """Abort the first connection (no close frame) that has received ``seconds`` of audio."""
        self._drop_seconds = seconds

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """The handshake: path, key and audio options, refused the way Deepgram refuses them."""
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        if url.path != "/v1/listen":
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "NOT_FOUND", "Not found.")
        if self.refuse_status is not None:
            return self._refuse(connection, self.refuse_status, "UNAVAILABLE", "Service unavailable.")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "INVALID_AUTH", "Invalid credentials.")
        encoding = query.get("encoding")
        if encoding is not None and encoding not in ENCODINGS:
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "Bad Request", "Unknown encoding.")
        if encoding is not None and not query.get("sample_rate", "").isdigit():
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "Bad Request", "sample_rate is required.")
        return None

    def _refuse(self, connection: ServerConnection, status: int, code: str, message: str) -> Response:
        self.rejected.append(int(status))
        body = {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}
        response = connection.respond(status, json.dumps(body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        response.headers["dg-error"] = message
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        record = ConnectionRecord(
            query=dict(parse_qsl(urlsplit(request.path).query)),
            headers={k.lower(): v for k, v in request.headers.raw_items()},
            request_id=str(uuid.uuid4()),
        )
        self.connections.append(record)
        await _Session(self, connection, record).run()


class _Session:
    """One connection: audio to the engine, its segments back as ``Results``."""

    def __init__(self, server: FakeDeepgram, connection: ServerConnection, record: ConnectionRecord) -> None:
        self.server = server
        self.connection = connection
        self.record = record
        query = record.query
        self.sample_rate = int(query.get("sample_rate", "16000"))
        self.language = query.get("language", "en")
        self.diarize = query.get("diarize") == "true"
        self.punctuate = query.get("punctuate") == "true" or query.get("smart_format") == "true"
        self.digest = hashlib.sha256()
        self.cursor = 0.0  # end of the audio covered by the results sent so far
        self.engine_offset = 0.0  # where the current engine stream began (moves on Finalize)
        self.last_activity = asyncio.get_running_loop().time()
        self.closing = False  # CloseStream received: the idle timeout no longer applies
        self.stream: SpeechStream | None = None
        self.flushed: list[TranscriptSegment] | None = None  # collects segments during a flush

    @property
    def audio_seconds(self) -> float:
        return self.record.audio_bytes / (2 * self.sample_rate)

    async def run(self) -> None:
        watchdog = None if self.server.hang else asyncio.create_task(self._watchdog())
        try:
            self.stream = await self._open()
            async for message in self.connection:
                self.last_activity = asyncio.get_running_loop().time()
                if isinstance(message, bytes):
                    if not await self._audio(message):
                        return
                elif not await self._control(message):
                    return
        except ConnectionClosed:
            pass
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if self.stream is not None:
                await self.stream.close()
            if self.record.close_code is None:
                self.record.close_code = self.connection.close_code
                self.record.close_reason = self.connection.close_reason or ""

    async def _open(self) -> SpeechStream:
        return await self.server.engine.open(
            language=self.language, sample_rate=self.sample_rate, on_segments=self._on_segments
        )

    async def _audio(self, pcm: bytes) -> bool:
        self.record.audio_bytes += len(pcm)
        self.digest.update(pcm)
        drop = self.server._drop_seconds
        if drop is not None and self.record.audio_bytes >= int(drop * self.sample_rate) * 2:
            self.server._drop_seconds = None
            self.record.dropped = True
            self.connection.transport.abort()  # no close frame: the client sees 1006
            return False
        if self.stream is not None and not self.server.hang:
            await self.stream.send(pcm)
        return True

    async def _control(self, text: str) -> bool:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        self.record.messages.append(str(kind))
        if self.server.hang or kind == "KeepAlive":
            return True
        if kind == "Finalize":
            await self._flush(from_finalize=True)
            self.engine_offset = self.audio_seconds
            self.stream = await self._open()
            return True
        if kind == "CloseStream":
            self.closing = True
            await self._flush(from_finalize=False)
            await self._send(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.record.request_id,
                    "sha256": self.digest.hexdigest(),
                    "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "duration": round(self.audio_seconds, 3),
                    "channels": 1,
                    "models": [MODEL_UUID],
                    "model_info": {MODEL_UUID: MODEL_INFO},
                }
            )
            await self.connection.close()
            return False
        await self._send(
            {
                "type": "Error",
                "variant": "SchemaError",
                "description": "Unknown or malformed control message.",
                "message": text,
            }
        )
        return True

    async def _flush(self, *, from_finalize: bool) -> None:
        """Recognise what the engine holds and send it, with the rest of the audio, as one result."""
        stream, self.stream = self.stream, None
        self.flushed = []
        if stream is not None:
            await stream.finish()
        segments, self.flushed = self.flushed, None
        if segments or from_finalize or self.audio_seconds > self.cursor:
            await self._send(self._results(segments, until=self.audio_seconds, from_finalize=from_finalize))

    async def _on_segments(self, segments: list[TranscriptSegment]) -> None:
        if self.flushed is not None:
            self.flushed.extend(segments)
        else:
            await self._send(self._results(segments, until=0.0, from_finalize=False))

    def _results(
        self, segments: list[TranscriptSegment], *, until: float, from_finalize: bool
    ) -> dict[str, Any]:
        words = [word for segment in segments for word in self._words(segment)]
        start = self.cursor
        end = max([start, until, *(w["end"] for w in words)])
        self.cursor = end
        text = " ".join(w["punctuated_word"] for w in words)
        confidence = min((w["confidence"] for w in words), default=0.0)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": True,
            "speech_final": True,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": text, "confidence": confidence, "words": words}]},
            "metadata": {
                "request_id": self.record.request_id,
                "model_info": MODEL_INFO,
                "model_uuid": MODEL_UUID,
            },
        }

    def _words(self, segment: TranscriptSegment) -> list[dict[str, Any]]:
        tokens = segment.text.split()
        if not tokens:
            return []
        start = self.engine_offset + segment.start
        step = (segment.end - segment.start) / len(tokens)
        words = []
        for i, token in enumerate(tokens):
            plain = _NON_WORD.sub("", token).lower() or token.lower()
            word: dict[str, Any] = {
                "word": plain,
                "start": round(start + i * step, 3),
                "end": round(start + (i + 1) * step, 3),
                "confidence": 0.99,
                "punctuated_word": token if self.punctuate else plain,
            }
            if self.diarize:
                word["speaker"] = segment.speaker_id
                word["speaker_confidence"] = 0.9
            words.append(word)
        return words

    async def _send(self, message: dict[str, Any]) -> None:
        if self.server.hang:
            return
        self.record.sent.append(message)
        with contextlib.suppress(ConnectionClosed):
            await self.connection.send(json.dumps(message))

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - self.last_activity
            if self.closing:
                return
            if idle >= self.server.idle_timeout:
                self.record.close_code, self.record.close_reason = 1011, "NET-0001"
                await self.connection.close(1011, "NET-0001")
                return
            await asyncio.sleep(self.server.idle_timeout - idle)

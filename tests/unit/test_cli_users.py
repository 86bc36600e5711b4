"""``omi-backend users create|revoke``: the token alone on stdout, stored hashed, revocable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.backends.sqlite_kv import SQLiteKeyValue
from app.cli import main
from app.core.tokens import TokenService


def resolve(data: Path, token: str) -> str | None:
    async def run() -> str | None:
        kv = SQLiteKeyValue(data / "kv.db")
        try:
            return await TokenService(kv).resolve(token)
        finally:
            await kv.close()

    return asyncio.run(run())


def test_users_create_prints_only_a_token_that_resolves_and_revoke_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMI_DATA_DIR", str(tmp_path / "data"))
    assert main(["users", "create", "alice"]) == 0
    token = capsys.readouterr().out
    assert token.endswith("\n") and token.count("\n") == 1
    token = token.strip()
    assert resolve(tmp_path / "data", token) == "alice"
    stored = b"".join(f.read_bytes() for f in (tmp_path / "data").iterdir() if f.is_file())
    assert token.encode() not in stored  # only its hash is kept (database and WAL alike)
    assert b"alice" in stored

    assert main(["users", "revoke", "alice", "--token", token]) == 0
    assert capsys.readouterr().out == ""
    assert resolve(tmp_path / "data", token) is None
    assert main(["users", "revoke", "alice", "--all"]) == 1  # nothing left to revoke
    assert main(["users", "create", "not a uid!"]) == 2
    assert "uid must be" in capsys.readouterr().err

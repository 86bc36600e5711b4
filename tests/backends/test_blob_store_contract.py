"""The BlobStore contract: every adapter of the port passes this suite unchanged.

A production adapter joins by adding a param to ``open_blobs`` that opens it on a fresh,
empty bucket; ``open_blobs()`` called again must reach the same bucket (reopen).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import anyio
import pytest

from app.backends.file_blobs import FileBlobStore
from app.core.ports import BlobStore

pytestmark = pytest.mark.anyio

Opener = Callable[[], BlobStore]
EVERY_BYTE = bytes(range(256)) * 4

BAD_PATHS = [
    "",
    "/",
    "/etc/passwd",
    "../outside",
    "alice/../../outside",
    "alice/..",
    "..",
    ".",
    "./alice",
    "alice/./x",
    "alice//x",
    "alice/",
    "alice\\x",
    "..\\outside",
    "C:\\outside",
    "alice/\x00x",
    "a..b",
]


@pytest.fixture(params=["file", "gcs"])
async def open_blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[BlobStore] = []
    gcs = request.getfixturevalue("open_gcs") if request.param == "gcs" else None

    def open_() -> BlobStore:
        if request.param == "file":
            blobs: BlobStore = FileBlobStore(tmp_path / "data" / "blobs")
        else:
            blobs = gcs()
        opened.append(blobs)
        return blobs

    yield open_
    for blobs in opened:
        await blobs.close()


@pytest.fixture
def blobs(open_blobs: Opener) -> BlobStore:
    return open_blobs()


async def test_adapter_satisfies_the_port(blobs: BlobStore) -> None:
    assert isinstance(blobs, BlobStore)


async def test_round_trip_of_binary_data(blobs: BlobStore) -> None:
    url = await blobs.put("alice/speech_profile.wav", EVERY_BYTE, "audio/wav")
    assert isinstance(url, str) and url
    assert await blobs.get("alice/speech_profile.wav") == EVERY_BYTE


async def test_empty_blob_is_not_a_missing_blob(blobs: BlobStore) -> None:
    await blobs.put("alice/empty", b"")
    assert await blobs.get("alice/empty") == b""
    assert await blobs.get("alice/other") is None


async def test_put_replaces(blobs: BlobStore) -> None:
    await blobs.put("alice/x", b"a much longer first version")
    await blobs.put("alice/x", b"short")
    assert await blobs.get("alice/x") == b"short"


async def test_delete_and_missing_paths(blobs: BlobStore) -> None:
    assert await blobs.get("nobody/nothing") is None
    await blobs.delete("nobody/nothing")  # not an error
    await blobs.put("alice/x", b"1")
    await blobs.delete("alice/x")
    assert await blobs.get("alice/x") is None
    await blobs.delete("alice/x")


async def test_paths_are_distinct(blobs: BlobStore) -> None:
    await blobs.put("alice/a", b"a")
    await blobs.put("alice/ab", b"ab")
    await blobs.put("alice-2/a", b"other user")
    await blobs.put("alice/deeper/a", b"deep")
    await blobs.put("top", b"top")
    assert [await blobs.get(p) for p in ("alice/a", "alice/ab", "alice-2/a", "alice/deeper/a", "top")] == [
        b"a",
        b"ab",
        b"other user",
        b"deep",
        b"top",
    ]
    await blobs.delete("alice/a")
    assert await blobs.get("alice/ab") == b"ab"
    assert await blobs.get("alice/deeper/a") == b"deep"


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_unsafe_paths_are_refused(blobs: BlobStore, path: str) -> None:
    with pytest.raises(ValueError):
        await blobs.put(path, b"x")
    with pytest.raises(ValueError):
        await blobs.get(path)
    with pytest.raises(ValueError):
        await blobs.delete(path)


async def test_concurrent_writes_are_whole(blobs: BlobStore) -> None:
    payloads = [bytes([i]) * 200_000 for i in range(20)]
    async with anyio.create_task_group() as tg:
        for payload in payloads:
            tg.start_soon(blobs.put, "alice/same", payload)
        for i in range(20):
            tg.start_soon(blobs.put, f"alice/many/{i}", payloads[i])
    assert await blobs.get("alice/same") in payloads
    assert [await blobs.get(f"alice/many/{i}") for i in range(20)] == payloads


async def test_blobs_survive_close_and_reopen(blobs: BlobStore, open_blobs: Opener) -> None:
    await blobs.put("alice/kept", EVERY_BYTE)
    await blobs.close()
    await blobs.close()  # closing twice is harmless
    assert await open_blobs().get("alice/kept") == EVERY_BYTE


# File adapter specifics.


async def test_file_put_returns_a_file_url_of_the_stored_bytes(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    url = await store.put("alice/speech profile.wav", b"RIFF")
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    stored = anyio.Path(unquote(parsed.path))
    assert stored == anyio.Path(tmp_path / "blobs" / "alice" / "speech profile.wav")
    assert await stored.read_bytes() == b"RIFF"
    await store.put("alice/speech profile.wav", b"RIFF2")
    left = [p.name async for p in anyio.Path(tmp_path / "blobs" / "alice").iterdir()]
    assert left == ["speech profile.wav"]  # no temporary files left behind
    await store.close()


async def test_file_refused_paths_write_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "deep" / "blobs")
    absolute = tmp_path / "absolute"
    for path in ("../outside", "../../outside", str(absolute)):
        with pytest.raises(ValueError):
            await store.put(path, b"x")
    for leaked in (tmp_path / "deep" / "outside", tmp_path / "outside", absolute):
        assert not await anyio.Path(leaked).exists()
    await store.close()


async def test_file_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = anyio.Path(tmp_path / "blobs"), anyio.Path(tmp_path / "outside")
    await root.mkdir()
    await outside.mkdir()
    await (outside / "secret").write_bytes(b"secret")
    await (root / "alice").symlink_to(outside, target_is_directory=True)
    store = FileBlobStore(Path(root))
    with pytest.raises(ValueError):
        await store.get("alice/secret")
    with pytest.raises(ValueError):
        await store.put("alice/planted", b"x")
    assert not await (outside / "planted").exists()
    await store.close()


async def test_paths_lists_every_stored_path_by_prefix(blobs: BlobStore) -> None:
    assert await blobs.paths() == []
    for path in ("bob/speech_profile.wav", "alice/speech_profile.wav", "alice/notes/a b.txt", "top.bin"):
        await blobs.put(path, b"x")
    assert await blobs.paths() == [
        "alice/notes/a b.txt",
        "alice/speech_profile.wav",
        "bob/speech_profile.wav",
        "top.bin",
    ]
    assert await blobs.paths("alice/") == ["alice/notes/a b.txt", "alice/speech_profile.wav"]
    assert await blobs.paths("al") == ["alice/notes/a b.txt", "alice/speech_profile.wav"]
    assert await blobs.paths("carol/") == []
    await blobs.delete("top.bin")
    assert "top.bin" not in await blobs.paths()

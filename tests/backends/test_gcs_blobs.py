"""The Cloud Storage adapter beyond the BlobStore contract, on ``gcp-storage-emulator``.

What the real SDK sees in the bucket: the object behind a ``gs://`` URL, its bytes and its
content type, under the store's prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import pytest
from google.cloud.storage import Blob, Bucket

from app.backends.gcs_blobs import GCSBlobStore

pytest_plugins = ["tests.backends.emulators"]
pytestmark = pytest.mark.anyio


async def stored(bucket: Bucket, name: str) -> Blob | None:
    blob: Blob | None = await anyio.to_thread.run_sync(bucket.get_blob, name)
    return blob


async def test_put_answers_the_gs_url_of_the_object(gcs_blobs: GCSBlobStore, gcs_bucket: Bucket) -> None:
    url = await gcs_blobs.put("alice/speech_profile.wav", b"RIFF", "audio/wav")
    assert url == f"gs://{gcs_bucket.name}/alice/speech_profile.wav"
    blob = await stored(gcs_bucket, "alice/speech_profile.wav")
    assert blob is not None
    assert await anyio.to_thread.run_sync(blob.download_as_bytes) == b"RIFF"


async def test_bytes_round_trip(gcs_blobs: GCSBlobStore) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # over 8 MiB: the SDK uploads it in resumable chunks
    await gcs_blobs.put("alice/big.bin", data)
    assert await gcs_blobs.get("alice/big.bin") == data


async def test_content_type_is_stored(gcs_blobs: GCSBlobStore, gcs_bucket: Bucket) -> None:
    await gcs_blobs.put("alice/profile.wav", b"RIFF", "audio/wav")
    await gcs_blobs.put("alice/notes.bin", b"\x00\x01")
    wav, other = await stored(gcs_bucket, "alice/profile.wav"), await stored(gcs_bucket, "alice/notes.bin")
    assert wav is not None and wav.content_type == "audio/wav"
    assert other is not None and other.content_type == "application/octet-stream"


async def test_prefix_is_a_folder_of_the_bucket(
    open_gcs: Callable[[], GCSBlobStore], gcs_bucket: Bucket
) -> None:
    blobs = GCSBlobStore(gcs_bucket.name, client=gcs_bucket.client, prefix="/omi/prod/")
    try:
        url = await blobs.put("alice/x", b"x")
        assert url == f"gs://{gcs_bucket.name}/omi/prod/alice/x"
        assert await stored(gcs_bucket, "omi/prod/alice/x") is not None
        assert await stored(gcs_bucket, "alice/x") is None
        assert await blobs.get("alice/x") == b"x"
        await anyio.to_thread.run_sync(lambda: gcs_bucket.blob("elsewhere/y").upload_from_string(b"y"))
        assert await blobs.paths() == ["alice/x"]  # the prefix is stripped; other folders unseen
        await blobs.delete("alice/x")
        assert await stored(gcs_bucket, "omi/prod/alice/x") is None
    finally:
        await blobs.close()
    with pytest.raises(ValueError):
        GCSBlobStore(gcs_bucket.name, client=gcs_bucket.client, prefix="omi/../x")


async def test_names_the_bucket_cannot_hold_are_refused(gcs_blobs: GCSBlobStore) -> None:
    for path in ("alice/a\nb", "alice/a\rb"):
        with pytest.raises(ValueError):
            await gcs_blobs.put(path, b"x")


async def test_each_test_starts_on_an_empty_bucket(gcs_blobs: GCSBlobStore, gcs_bucket: Bucket) -> None:
    # The other tests here write under alice/; none of it is left.
    assert await anyio.to_thread.run_sync(lambda: list(gcs_bucket.list_blobs())) == []
    assert await gcs_blobs.get("alice/profile.wav") is None

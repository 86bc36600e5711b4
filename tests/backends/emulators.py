"""The real emulators behind the production storage adapters' tests, as pytest fixtures.

Firestore: the ``cloud_firestore_emulator`` launcher of the Debian package
google-cloud-cli-firestore-emulator, started once per session on a free port (in a new session,
so that stopping its process group also stops the java server it forks) and reset before each
test. Cloud Storage: ``gcp-storage-emulator`` in this process, wiped before each test. The vendors'
own SDKs reach them through ``FIRESTORE_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST``, set only
for the test that asks.

Load with ``pytest_plugins = ["tests.backends.emulators"]``; ``open_firestore`` and ``open_gcs``
return openers (each call opens another store on the same, freshly emptied storage, as the
contract suites want), ``firestore_store`` and ``gcs_blobs`` one open store, and
``firestore_client`` and ``gcs_bucket`` the SDKs' own view of the same storage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple

import pytest
from gcp_storage_emulator.server import Server, create_server  # type: ignore[import-untyped]
from google.auth.credentials import AnonymousCredentials
from google.cloud.firestore import AsyncClient
from google.cloud.storage import Bucket, Client

from app.backends.firestore_store import FirestoreMemoryStore
from app.backends.gcs_blobs import GCSBlobStore

__all__ = [
    "FIRESTORE_PROJECT",
    "GCS_BUCKET",
    "FirestoreEmulator",
    "GCSEmulator",
    "anonymous_client",
    "firestore_client",
    "firestore_emulator",
    "firestore_store",
    "gcs_blobs",
    "gcs_bucket",
    "gcs_emulator",
    "open_firestore",
    "open_gcs",
]

FIRESTORE_PACKAGE = "google-cloud-cli-firestore-emulator"
FIRESTORE_LAUNCHER = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator"
)
FIRESTORE_SKIP = f"Firestore emulator not installed: apt-get install {FIRESTORE_PACKAGE}"
FIRESTORE_PROJECT = "omi-backend-test"
GCS_BUCKET = "omi-backend-test"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def find_firestore_launcher() -> Path | None:
    """The launcher as ``dpkg -L`` lists it, else at its usual place; ``None`` when absent."""
    try:
        listed = subprocess.run(
            ["dpkg", "-L", FIRESTORE_PACKAGE], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        listed = []
    candidates = [Path(p) for p in listed if p.endswith("/cloud_firestore_emulator")] + [FIRESTORE_LAUNCHER]
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class FirestoreEmulator:
    """One ``cloud_firestore_emulator start`` and the java server it forks."""

    def __init__(self, launcher: Path, log: Path) -> None:
        self.launcher, self.log_path, self.port = launcher, log, free_port()
        self.host = f"{HOST}:{self.port}"
        self.startup_seconds = 0.0
        self.java_pids: list[int] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _http(self, method: str, path: str) -> int:
        request = urllib.request.Request(f"http://{self.host}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status

    def start(self, timeout: float = 60.0) -> None:
        """Start the launcher and wait until the emulator answers on its port."""
        began = time.monotonic()
        self._log = self.log_path.open("wb")
        args = [str(self.launcher), "start", f"--host={HOST}", f"--port={self.port}"]
        self._process = process = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        while time.monotonic() - began < timeout and process.poll() is None:
            with contextlib.suppress(OSError):
                if self._http("GET", "/") == 200:
                    self.startup_seconds = time.monotonic() - began
                    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
                    with contextlib.suppress(OSError):
                        self.java_pids = [int(pid) for pid in children.read_text().split()]
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Firestore emulator did not start: {self.log_path.read_text(errors='replace')}")

    def reset(self, project: str = FIRESTORE_PROJECT) -> None:
        """Delete every document of ``project``'s default database."""
        self._http("DELETE", f"/emulator/v1/projects/{project}/databases/(default)/documents")

    def _gone(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            launcher_done = self._process is None or self._process.poll() is not None
            if launcher_done and not any(map(_alive, self.java_pids)) and not listening(self.port):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop the launcher's process group, the java server with it; then nothing may listen."""
        if self._process is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, sig)
                if self._gone(15):
                    break
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if listening(self.port) or any(map(_alive, self.java_pids)):
            raise RuntimeError(f"Firestore emulator still runs (java {self.java_pids}, port {self.port})")


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    launcher = find_firestore_launcher()
    if launcher is None:
        pytest.skip(FIRESTORE_SKIP)
    emulator = FirestoreEmulator(launcher, tmp_path_factory.mktemp("firestore") / "emulator.log")
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def open_firestore(
    firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], FirestoreMemoryStore]:
    """Opens stores on the emulator, emptied before the test; whoever opens one closes it."""
    firestore_emulator.reset()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    return partial(FirestoreMemoryStore, FIRESTORE_PROJECT)


@pytest.fixture
async def firestore_store(
    open_firestore: Callable[[], FirestoreMemoryStore], anyio_backend: Any
) -> AsyncIterator[FirestoreMemoryStore]:
    store = open_firestore()
    yield store
    await store.close()


@pytest.fixture
async def firestore_client(
    open_firestore: Callable[[], FirestoreMemoryStore], anyio_backend: Any
) -> AsyncIterator[AsyncClient]:
    """The SDK's own client on the (emptied) emulator, to look at what a store wrote."""
    client = AsyncClient(project=FIRESTORE_PROJECT)
    yield client
    api = getattr(client, "_firestore_api_internal", None)  # its gRPC channel, made on first use
    if api is not None:
        await api.transport.close()


def anonymous_client() -> Client:
    """A Cloud Storage client for the emulator (``STORAGE_EMULATOR_HOST`` set), without credentials."""
    return Client(project="test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]


class GCSEmulator(NamedTuple):
    server: Server
    url: str


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GCSEmulator]:
    port = free_port()
    server = create_server(HOST, port, in_memory=True, default_bucket=GCS_BUCKET)
    server.start()
    try:
        yield GCSEmulator(server, f"http://{HOST}:{port}")
    finally:
        server.stop()


@pytest.fixture
def open_gcs(
    gcs_emulator: GCSEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], GCSBlobStore]]:
    """Opens stores on the emulator's bucket, emptied before the test, each with its own client."""
    gcs_emulator.server.wipe(keep_buckets=True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    clients: list[Client] = []

    def open_() -> GCSBlobStore:
        clients.append(anonymous_client())
        return GCSBlobStore(GCS_BUCKET, client=clients[-1])

    yield open_
    for client in clients:
        client.close()


@pytest.fixture
async def gcs_blobs(open_gcs: Callable[[], GCSBlobStore], anyio_backend: Any) -> AsyncIterator[GCSBlobStore]:
    blobs = open_gcs()
    yield blobs
    await blobs.close()


@pytest.fixture
def gcs_bucket(open_gcs: Callable[[], GCSBlobStore]) -> Iterator[Bucket]:
    """The emulator's (emptied) bucket through the SDK's own client, to look at what a store wrote."""
    client = anonymous_client()
    yield client.bucket(GCS_BUCKET)
    client.close()

"""DNS rebinding against outgoing plugin requests: the checked address is the connected one.

A hostile DNS server answers a public address when the server checks a plugin's URL and
``127.0.0.1`` (or ``169.254.169.254``) when it connects. The resolver here is that DNS
server: a function handed to :class:`PinnedTransport` (or, for the call sites, the event
loop's ``getaddrinfo``, which the system resolver uses). Every server is real and listens on
127.0.0.1; the sockets to "public" addresses are refused by :class:`LoopbackOnly` before they
open, so no packet leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from litestar.exceptions import ValidationException

from app.api.plugins import setup_completed
from app.backends.sqlite_kv import SQLiteKeyValue
from app.config import Settings
from app.core.models import Memory
from app.core.netguard import check_public_url, is_public_address
from app.core.pinned_transport import PinnedTransport
from app.plugins import PluginContext
from builtin_plugins.omi_webhooks import QUEUE_KEY, OmiWebhooks, read_deliveries
from builtin_plugins.omi_webhooks.sender import send_signed
from tests.fakes.plugin_server import FakePluginServer

pytestmark = pytest.mark.anyio

PUBLIC = "93.184.215.14"
"""What the hostile DNS server answers to look harmless; never connected to (LoopbackOnly)."""


class Rebinder:
    """A hostile DNS server: the n-th query gets the n-th answer, the last one from then on."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.queries: list[tuple[str, list[str]]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        answer = self.answers[min(len(self.queries), len(self.answers) - 1)]
        self.queries.append((host, answer))
        return answer


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """Opens real sockets, to loopback addresses only, and records every address it is asked for."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.asked: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"the test does not leave this machine ({host})")
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class LoopServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 in the test's loop (TLS when given a context).

    It counts the connections it accepted (after the TLS handshake, for TLS), records each
    request's line and headers, and answers every request with ``answer`` as JSON.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.answer: dict[str, Any] = {"is_setup_completed": True, "message": "Hello from the plugin"}
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> LoopServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *fields = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((line, headers))
            body = json.dumps(self.answer).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@pytest.fixture
async def victim() -> AsyncIterator[LoopServer]:
    """What the attacker wants to reach: a service on the server's own loopback."""
    async with LoopServer() as server:
        yield server


# -- the transport ---------------------------------------------------------------------------------

SCRIPTS = {
    "public, then loopback": ([PUBLIC], ["127.0.0.1"]),
    "loopback, then public": (["127.0.0.1"], [PUBLIC]),
    "public and loopback at once": ([PUBLIC, "127.0.0.1"],),
    "public, then the metadata server": ([PUBLIC], ["169.254.169.254"]),
    "public, then IPv4-mapped loopback": ([PUBLIC], ["::ffff:127.0.0.1"]),
    "public, then the unspecified address": ([PUBLIC], ["0.0.0.0"]),
}


@pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
async def test_a_rebinding_name_never_reaches_the_loopback(
    victim: LoopServer, script: tuple[list[str], ...]
) -> None:
    dns, sockets = Rebinder(*script), LoopbackOnly()
    url = f"http://rebind.example:{victim.port}/setup"
    await check_public_url(url, allow_private=False)  # what the call sites check first: a name passes
    transport = PinnedTransport(allow_private=False, resolver=dns, network_backend=sockets)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(4):
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
    assert victim.connections == 0 and victim.requests == []
    # One lookup per connection attempt, and a socket only to an address of an answer that
    # was wholly public: the check and the connect used the same answer.
    assert [host for host, _ in dns.queries] == ["rebind.example"] * 4
    assert sockets.asked == [answer[0] for _, answer in dns.queries if all(a == PUBLIC for a in answer)]
    assert all(is_public_address(ipaddress.ip_address(a)) for a in sockets.asked)


SECRET = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


async def test_a_webhook_to_a_rebinding_name_is_refused_for_good_and_sends_nothing(
    victim: LoopServer,
) -> None:
    dns = Rebinder([PUBLIC], ["127.0.0.1"])
    transport = PinnedTransport(allow_private=False, resolver=dns, network_backend=LoopbackOnly())
    url = f"http://rebind.example:{victim.port}/memory?uid=alice"
    async with httpx.AsyncClient(transport=transport) as client:
        first, second = [
            await send_signed(client, url, b"{}", secret=SECRET, webhook_id=f"msg_{n}", timestamp=1)
            for n in (1, 2)
        ]
    # The public answer: connected to that address (the test stops the socket), to be retried.
    assert first.target_failed and not first.final and first.error is not None
    assert first.error.startswith("ConnectError: the test does not leave this machine (93.184.215.14)")
    # The loopback answer: refused before any socket, never retried, not the target's fault.
    assert second.final and not second.target_failed and second.status is None
    assert second.error == "refused: 'rebind.example' resolves to 127.0.0.1, which is not a public address"
    assert victim.connections == 0


async def test_an_allowed_name_is_delivered_end_to_end_when_private_addresses_are_allowed() -> None:
    plugin_server = FakePluginServer()
    plugin_server.secret = SECRET
    plugin_server.start()
    try:
        port = int(plugin_server.url.rsplit(":", 1)[1])
        dns = Rebinder(["::1", "127.0.0.1"])  # nothing listens on ::1: the next address is tried
        transport = PinnedTransport(allow_private=True, resolver=dns)
        async with httpx.AsyncClient(transport=transport) as client:
            outcome = await send_signed(
                client,
                f"http://plugin.example:{port}/realtime?uid=alice",
                json.dumps({"session_id": "s1", "segments": []}).encode(),
                secret=plugin_server.secret,
                webhook_id="msg_2",
                timestamp=1_900_000_000,
            )
        assert (outcome.status, outcome.error, outcome.final) == (200, None, True)
        assert outcome.reply == plugin_server.message
        [received] = plugin_server.requests("/realtime")
        assert received.signature_ok and received.uid == "alice" and received.webhook_id == "msg_2"
        assert dns.queries == [("plugin.example", ["::1", "127.0.0.1"])]
    finally:
        plugin_server.stop()


# -- HTTPS: SNI and certificate verification stay with the host name -------------------------------


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: Any, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


class Pki:
    """A throw-away CA and, per host name, a server TLS context with a certificate for that name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _certificate("Rebinding Test CA", self.key, None, self.key, ca=True)
        self.client = ssl.create_default_context(
            cadata=self.ca.public_bytes(serialization.Encoding.PEM).decode()
        )
        self.sni: list[str | None] = []

    def server(self, host: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(host, key, self.ca, self.key, ca=False)
        pem = self.directory / f"{host}.pem"
        pem.write_bytes(
            certificate.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
        context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def test_https_keeps_sni_and_verifies_the_certificate_against_the_name(pki: Pki) -> None:
    async with LoopServer(pki.server("plugin.example")) as server:
        dns = Rebinder(["127.0.0.1"])
        transport = PinnedTransport(allow_private=True, resolver=dns, verify=pki.client)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"https://plugin.example:{server.port}/setup?uid=alice")
            assert response.json() == server.answer
            # The certificate names plugin.example only: asked by its address, it does not verify.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{server.port}/setup")
    [(line, headers)] = server.requests
    assert line == "GET /setup?uid=alice HTTP/1.1"
    assert headers["host"] == f"plugin.example:{server.port}"
    assert pki.sni == ["plugin.example", None]  # no SNI is sent for an IP address
    assert dns.queries == [("plugin.example", ["127.0.0.1"])]


async def test_https_refuses_a_certificate_for_another_name_at_the_pinned_address(pki: Pki) -> None:
    async with LoopServer(pki.server("other.example")) as server:
        transport = PinnedTransport(allow_private=True, resolver=Rebinder(["127.0.0.1"]), verify=pki.client)
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://plugin.example:{server.port}/setup")
    assert server.connections == 0 and pki.sni == ["plugin.example"]


# -- the call sites, with the system resolver (the loop's getaddrinfo) as the hostile DNS ----------


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``rebind.example`` resolves to 127.0.0.1 through the system resolver; the names asked."""
    real = asyncio.base_events.BaseEventLoop.getaddrinfo
    asked: list[str] = []

    async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("rebind.example", b"rebind.example"):  # anyio asks with IDNA-encoded bytes
            asked.append("rebind.example")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", getaddrinfo)
    return asked


async def test_the_setup_check_connects_only_to_a_checked_address(
    victim: LoopServer, rebinding_dns: list[str]
) -> None:
    url = f"http://rebind.example:{victim.port}/setup"
    with pytest.raises(ValidationException) as caught:
        await setup_completed(url, "alice", allow_private=False)
    assert caught.value.detail == (
        "Plugin setup cannot be checked: its URL is refused "
        "('rebind.example' resolves to 127.0.0.1, which is not a public address)"
    )
    assert victim.connections == 0
    await setup_completed(url, "alice", allow_private=True)  # OMI_WEBHOOK_ALLOW_PRIVATE
    [(line, headers)] = victim.requests
    assert line == "GET /setup?uid=alice HTTP/1.1" and headers["host"] == f"rebind.example:{victim.port}"
    assert rebinding_dns == ["rebind.example", "rebind.example"]  # once per check, at connect time


class OneEntry:
    def __init__(self, url: str) -> None:
        self.url = url

    def omi_entries(self) -> list[dict[str, Any]]:
        integration = {"triggers_on": "memory_creation", "webhook_url": self.url}
        return [
            {"id": "notes", "capabilities": ["external_integration"], "external_integration": integration}
        ]


async def _deliver(tmp_path: Path, url: str, *, allow_private: bool) -> tuple[list[Any], SQLiteKeyValue]:
    kv = SQLiteKeyValue(tmp_path / f"kv-{allow_private}.db")
    plugin = OmiWebhooks(poll_interval=3600.0)
    plugin.catalogue = OneEntry(url)

    async def enabled(plugin_id: str, uid: str) -> bool:
        return True

    plugin.is_enabled = enabled
    settings = Settings(
        data_dir=tmp_path,
        webhook_allow_private=allow_private,
        webhook_connect_timeout=2.0,
        webhook_read_timeout=2.0,
    )
    context = PluginContext(
        settings=settings,
        kv=kv,
        store=None,  # type: ignore[arg-type]
        blobs=None,  # type: ignore[arg-type]
        llm=None,  # type: ignore[arg-type]
        create_memory=None,  # type: ignore[arg-type]
        is_enabled=enabled,
        extras={},
    )
    now = dt.datetime.now(dt.UTC)
    await plugin.on_startup(context)
    try:
        messages = await plugin.on_memory_created(
            "alice", Memory(id="m1", created_at=now, started_at=now, finished_at=now)
        )
    finally:
        await plugin.on_shutdown()
    return messages or [], kv


async def test_the_webhook_plugin_connects_only_to_a_checked_address(
    tmp_path: Path, victim: LoopServer, rebinding_dns: list[str]
) -> None:
    url = f"http://rebind.example:{victim.port}/memory"
    messages, kv = await _deliver(tmp_path, url, allow_private=False)
    try:
        assert messages == [] and victim.connections == 0
        [record] = await read_deliveries(kv, "notes", "alice")
        assert (
            record.error == "refused: 'rebind.example' resolves to 127.0.0.1, which is not a public address"
        )
        assert await kv.hgetall(QUEUE_KEY) == {}  # refused is final: not queued for a retry
    finally:
        await kv.close()
    messages, kv = await _deliver(tmp_path, url, allow_private=True)
    try:
        assert [m.text for m in messages] == [victim.answer["message"]]
        [(line, headers)] = victim.requests
        assert (
            line == "POST /memory?uid=alice HTTP/1.1" and headers["host"] == f"rebind.example:{victim.port}"
        )
        assert headers["webhook-id"].startswith("msg_")
    finally:
        await kv.close()

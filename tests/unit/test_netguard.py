"""check_public_url (http(s) only, no literal internal address) and PinnedBackend's one-lookup check."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpcore
import httpx
import pytest

from app.core import netguard
from app.core.netguard import check_public_url
from app.core.pinned_transport import (
    AddressRefused,
    PinnedBackend,
    PinnedTransport,
    Resolver,
    system_resolver,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.8/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://240.0.0.1/hook",
        "http://100.64.0.1/hook",  # carrier-grade NAT: not global
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::]/hook",
    ],
)
async def test_private_hosts_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not a public address"):
        await check_public_url(url, allow_private=False)
    await check_public_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "file:///etc/passwd", "gopher://x", "javascript:alert(1)", "example.org/x"]
)
async def test_only_http_and_https(url: str) -> None:
    for allow in (False, True):
        with pytest.raises(ValueError, match="only http and https"):
            await check_public_url(url, allow_private=allow)


@pytest.mark.parametrize(
    "url", ["http:///path", "http://host:99999/", "https://[::1/", "http://xn--zz.example/hook"]
)
async def test_malformed_urls(url: str) -> None:
    with pytest.raises(ValueError):
        await check_public_url(url, allow_private=True)


async def test_public_literal_addresses_pass() -> None:
    await check_public_url("https://93.184.215.14/hook", allow_private=False)
    await check_public_url("http://[2606:4700:4700::1111]:8080/hook", allow_private=False)


async def test_names_are_left_to_the_transport_and_not_resolved_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving here and again at connect time is the rebinding gap: check_public_url does not."""
    asked: list[str] = []

    async def getaddrinfo(self: Any, host: str, port: int, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", getaddrinfo)
    await check_public_url("https://mixed.example/hook", allow_private=False)
    assert asked == []


@pytest.mark.parametrize("host", ["localhost", "LocalHost.", "api.localhost", "x.y.localhost."])
async def test_localhost_names_are_refused_without_resolving(host: str) -> None:
    with pytest.raises(ValueError, match="loopback name"):
        await check_public_url(f"http://{host}:8080/hook", allow_private=False)
    await check_public_url(f"http://{host}:8080/hook", allow_private=True)


def answering(answers: dict[str, list[str]], asked: list[str]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


ANSWERS = {
    "mixed.example": ["93.184.215.14", "10.1.2.3"],
    "public.example": ["93.184.215.14", "2606:4700::1"],
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "scoped.example": ["fe80::1%eth0"],
    "empty.example": [],
    "garbage.example": ["not-an-address"],
}


async def test_the_backend_refuses_a_name_if_any_of_its_addresses_is_not_public() -> None:
    asked: list[str] = []
    backend = PinnedBackend(netguard.is_public_address, resolver=answering(ANSWERS, asked))
    assert await backend.checked_addresses("public.example", 443) == ["93.184.215.14", "2606:4700::1"]
    for host, bad in [
        ("mixed.example", r"10\.1\.2\.3"),
        ("metadata.example", r"169\.254\.169\.254"),
        ("mapped.example", r"::ffff:127\.0\.0\.1"),
        ("scoped.example", "fe80::1"),
        ("garbage.example", "not an IP address"),
    ]:
        with pytest.raises(AddressRefused, match=bad):
            await backend.checked_addresses(host, 443)
    for host, why in [("nowhere.example", "cannot resolve"), ("empty.example", "no address")]:
        with pytest.raises(httpcore.ConnectError, match=why) as caught:
            await backend.checked_addresses(host, 443)
        assert not isinstance(caught.value, AddressRefused)  # a DNS failure may be retried
    assert asked == [
        "public.example",
        "mixed.example",
        "metadata.example",
        "mapped.example",
        "scoped.example",
        "garbage.example",
        "nowhere.example",
        "empty.example",
    ]  # each name resolved exactly once


async def test_literal_addresses_are_checked_without_a_lookup() -> None:
    asked: list[str] = []
    backend = PinnedBackend(netguard.is_public_address, resolver=answering(ANSWERS, asked))
    assert await backend.checked_addresses("93.184.215.14", 80) == ["93.184.215.14"]
    assert await backend.checked_addresses("[2606:4700::1]", 80) == ["2606:4700::1"]
    for literal in ["127.0.0.1", "[::1]", "169.254.169.254", "0.0.0.0"]:
        with pytest.raises(AddressRefused):
            await backend.checked_addresses(literal, 80)
    assert asked == []


async def test_allow_private_lets_every_address_through_but_still_pins_it() -> None:
    asked: list[str] = []
    transport = PinnedTransport(allow_private=True, resolver=answering(ANSWERS, asked))
    assert await transport.backend.checked_addresses("mixed.example", 80) == ["93.184.215.14", "10.1.2.3"]
    assert await transport.backend.checked_addresses("127.0.0.1", 80) == ["127.0.0.1"]
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await transport.backend.checked_addresses("nowhere.example", 80)
    await transport.aclose()


async def test_the_system_resolver_answers_without_blocking_and_deduplicates() -> None:
    addresses = await system_resolver("localhost", 80)
    assert addresses and len(addresses) == len(set(addresses))
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)
    with pytest.raises(OSError):
        await system_resolver("no-such-host.invalid", 80)


async def test_a_name_that_cannot_be_encoded_is_refused_for_good() -> None:
    backend = PinnedBackend(netguard.is_public_address)  # the system resolver: fails before any query
    for host in ["a..b.example", "a" * 64 + ".example"]:
        with pytest.raises(AddressRefused, match="not a valid host name"):
            await backend.checked_addresses(host, 80)


async def test_a_resolver_that_never_answers_is_a_connect_timeout() -> None:
    async def stuck(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with httpx.AsyncClient(
        transport=PinnedTransport(allow_private=True, resolver=stuck), timeout=httpx.Timeout(5, connect=0.05)
    ) as client:
        with pytest.raises(httpx.ConnectTimeout, match=r"resolving 'slow\.example' timed out"):
            await client.get("http://slow.example/hook")


async def test_a_refusal_reaches_the_caller_as_an_httpx_error_with_its_request() -> None:
    transport = PinnedTransport(allow_private=False, resolver=answering(ANSWERS, []))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(AddressRefused) as caught:
            await client.post("http://metadata.example/latest/meta-data", content=b"x")
    assert isinstance(caught.value, httpx.ConnectError)
    assert caught.value.request.url.host == "metadata.example"
    with pytest.raises(httpcore.ConnectError, match="Unix sockets"):
        await transport.backend.connect_unix_socket("/tmp/x.sock")


def test_is_public_address() -> None:
    import ipaddress

    assert netguard.is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert not netguard.is_public_address(ipaddress.ip_address("::ffff:10.0.0.1"))

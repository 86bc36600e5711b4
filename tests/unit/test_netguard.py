"""check_public_url: http(s) only, and no host inside the server's own network unless allowed."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from app.core import netguard
from app.core.netguard import check_public_url

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


@pytest.mark.parametrize("url", ["http:///path", "http://host:99999/", "https://[::1/"])
async def test_malformed_urls(url: str) -> None:
    with pytest.raises(ValueError):
        await check_public_url(url, allow_private=True)


async def test_public_literal_addresses_pass() -> None:
    await check_public_url("https://93.184.215.14/hook", allow_private=False)
    await check_public_url("http://[2606:4700:4700::1111]:8080/hook", allow_private=False)


async def test_a_name_is_refused_if_any_address_it_resolves_to_is_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {
        "mixed.example": ["93.184.215.14", "10.1.2.3"],
        "public.example": ["93.184.215.14", "2606:4700::1"],
    }

    async def getaddrinfo(self: Any, host: str, port: int, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", getaddrinfo)
    with pytest.raises(ValueError, match=r"10\.1\.2\.3"):
        await check_public_url("https://mixed.example/hook", allow_private=False)
    await check_public_url("https://public.example/hook", allow_private=False)
    with pytest.raises(ValueError, match="cannot resolve"):
        await check_public_url("https://nowhere.example/hook", allow_private=False)
    await check_public_url("https://nowhere.example/hook", allow_private=True)  # not even resolved


def test_is_public_address() -> None:
    import ipaddress

    assert netguard.is_public_address(ipaddress.ip_address("8.8.8.8"))
    assert not netguard.is_public_address(ipaddress.ip_address("::ffff:10.0.0.1"))

"""Refuse outgoing requests to addresses inside the server's own network.

Webhook URLs come from plugin catalogues that users do not control; without this check a
catalogue entry could make the server ``POST`` to ``http://127.0.0.1:6379`` or a cloud
metadata endpoint. A host is resolved (off the event loop) and refused when any of its
addresses is private, loopback, link-local, multicast, reserved or unspecified.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = ["check_public_url", "is_public_address"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public_address(address: _Address) -> bool:
    """Whether ``address`` is a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


async def _resolve(host: str, port: int) -> list[_Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from exc
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


async def check_public_url(url: str, *, allow_private: bool) -> None:
    """Raise ``ValueError`` unless ``url`` is http(s) and its host resolves to public addresses only.

    Args:
        url: The URL about to be requested.
        allow_private: Skip the address check (``OMI_WEBHOOK_ALLOW_PRIVATE``, for tests and
            for plugin servers on the same private network); the scheme is still checked.

    Raises:
        ValueError: The scheme is not http or https, the URL has no host, the host does not
            resolve, or it resolves to a private, loopback, link-local, multicast, reserved
            or unspecified address.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    if allow_private:
        return
    try:
        addresses: list[_Address] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port or (443 if parts.scheme == "https" else 80))
    if not addresses:
        raise ValueError(f"{host!r} resolves to no address")
    for address in addresses:
        if not is_public_address(address):
            raise ValueError(f"{host!r} resolves to {address}, which is not a public address")

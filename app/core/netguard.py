"""Refuse outgoing requests to addresses inside the server's own network.

Webhook URLs come from plugin catalogues that users do not control; without this check a
catalogue entry could make the server ``POST`` to ``http://127.0.0.1:6379`` or a cloud
metadata endpoint. An address is refused when it is private, loopback, link-local,
multicast, reserved or unspecified (:func:`is_public_address`).

:func:`check_public_url` checks what the URL itself says (scheme, host, a literal address,
``localhost``). Host names are resolved and checked by
:class:`app.core.pinned_transport.PinnedTransport` when it connects, once, so the address
checked is the address connected to: a request to such a URL must go through that transport.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx

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


async def check_public_url(url: str, *, allow_private: bool) -> None:
    """Raise ``ValueError`` unless ``url`` is http(s) and its host may be public.

    No name is resolved here (see the module's docstring): a literal address must be public,
    and ``localhost`` names (always loopback, RFC 6761) are refused.

    Args:
        url: The URL about to be requested.
        allow_private: Skip the address check (``OMI_WEBHOOK_ALLOW_PRIVATE``, for tests and
            for plugin servers on the same private network); the scheme is still checked.

    Raises:
        ValueError: The scheme is not http or https, the URL has no host, or the host is a
            private, loopback, link-local, multicast, reserved or unspecified address, or a
            ``localhost`` name.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(f"malformed URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise ValueError("the URL has no host")
    try:
        httpx.Request("GET", url)  # what httpx cannot send (an invalid IDNA label) is malformed too
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"malformed URL: {exc}") from exc
    if allow_private:
        return
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise ValueError(f"{host!r} is a loopback name, which is not a public address")
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return  # a name: PinnedTransport resolves and checks it when it connects
    if not is_public_address(address):
        raise ValueError(f"{host!r} is not a public address")

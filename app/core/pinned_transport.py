"""An httpx transport that resolves a host once, checks the answer, and connects to it.

Checking a URL's host and then letting httpx connect opens a DNS-rebinding gap: the name
is resolved twice, and a hostile DNS server can answer a public address to the check and
``127.0.0.1`` (or the cloud metadata address ``169.254.169.254``) to the connect.
:class:`PinnedTransport` closes it: its network backend (:class:`PinnedBackend`) resolves
the host itself, without blocking the event loop, refuses the connection when any address
is not allowed, and opens the socket to exactly one of the addresses it checked.

Only the socket moves to the IP address: the URL keeps the host name, so httpx sends it in
the ``Host`` header, and httpcore hands it to the TLS handshake as ``server_hostname``
(SNI and certificate verification against the name). Redirects are not special: every new
connection, to whatever host, goes through the same resolve-check-connect.

A transport passed to ``httpx.AsyncClient`` also turns off the ``HTTP(S)_PROXY``
environment proxies: through a proxy the proxy resolves the name, and nothing could be pinned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from app.core.netguard import is_public_address

__all__ = ["AddressRefused", "PinnedBackend", "PinnedTransport", "Resolver", "system_resolver"]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: the IP addresses a host name stands for, as strings."""

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""httpx's own default pool limits."""


class AddressRefused(httpx.ConnectError):
    """The host resolved to an address that is not allowed; no connection was attempted."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's answer for ``host`` (``getaddrinfo`` in the loop's executor), in its order.

    Raises:
        OSError: The name does not resolve.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parse(text: str) -> _Address:
    """An address from a resolver; an IPv6 scope (``fe80::1%eth0``) is not part of the check."""
    return ipaddress.ip_address(text.partition("%")[0])


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to resolved addresses that ``allowed`` accepts.

    Args:
        allowed: Whether a connection to an address is allowed.
        resolver: Resolves a host name; called once per connection.
        inner: Opens the sockets (to IP addresses only); httpcore's anyio backend by default.
    """

    def __init__(
        self,
        allowed: Callable[[_Address], bool],
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed = allowed
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once; its addresses, when every one of them is allowed.

        Raises:
            AddressRefused: One of the addresses is not allowed, or the name is not valid.
            httpcore.ConnectError: The name does not resolve, or to nothing.
        """
        host = host.strip("[]")
        try:
            _parse(host)
            is_literal = True
        except ValueError:
            is_literal = False
        if is_literal:
            addresses = [host]  # an address in the URL: nothing to resolve
        else:
            try:
                addresses = await self._resolver(host, port)
            except UnicodeError as exc:  # an empty or too long label: it never resolves
                raise AddressRefused(f"{host!r} is not a valid host name ({exc})") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolves to no address")
        for text in addresses:
            try:
                address = _parse(text)
            except ValueError as exc:
                raise AddressRefused(f"{host!r} resolves to {text!r}, which is not an IP address") from exc
            if not self._allowed(address):
                raise AddressRefused(f"{host!r} resolves to {text}, which is not a public address")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface; it passes it by name)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self.checked_addresses(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
        failure: Exception | None = None
        for address in addresses:  # in the resolver's order, within the one connect timeout
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"connecting to {host!r} timed out")
            try:
                return await self._inner.connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"cannot connect to {host!r}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for outgoing plugin requests")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _any_address(address: _Address) -> bool:
    return True


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, connecting through a :class:`PinnedBackend`.

    Args:
        allow_private: Allow every address (``OMI_WEBHOOK_ALLOW_PRIVATE``); the host is still
            resolved once and the socket opened to the resolved address.
        resolver: Resolves host names (the system resolver by default).
        network_backend: Opens the sockets (httpcore's anyio backend by default).
        verify: Certificate verification, as for ``httpx.AsyncHTTPTransport``.
        limits: Connection pool limits.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify)
        super().__init__(verify=ssl_context, limits=limits)
        self.backend = PinnedBackend(
            _any_address if allow_private else is_public_address, resolver=resolver, inner=network_backend
        )
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps its httpcore pool in _pool")
        # The pool httpx builds (TLS context, limits), opening its connections through the backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except AddressRefused as exc:
            exc.request = request
            raise

"""Outbound URL safety: only http(s) to public addresses, checked where the connection is made.

Every address a name resolves to must be public (not loopback, private, link-local, multicast or
reserved), unless the host is on the allow-list. The check runs in the HTTP client's own connect
step, so it covers every redirect and a name that resolves differently the second time.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.errors import UnsafeUrl

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")

# IPv6 forms whose last 32 bits are the IPv4 address a packet ends up at: IPv4-compatible, IPv4-translated
# (SIIT) and NAT64's well-known prefix. A NAT64 gateway reaches whatever it is given, internal networks too.
_LOW_32_BITS = [ipaddress.IPv6Network(net) for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")]
# Forms refused whatever they carry: NAT64's local-use prefix (the IPv4's place depends on the operator's
# prefix length), Teredo (a relayed, obfuscated IPv4) and the deprecated site-local range.
_REFUSED_IPV6 = [ipaddress.IPv6Network(net) for net in ("64:ff9b:1::/48", "2001::/32", "fec0::/10")]


class Policy:
    """Which hosts may be reached: public addresses, plus the allow-listed names and networks."""

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.lower())

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not http(s) or whose host resolves to an address we must not reach."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsafeUrl(f"only http and https URLs are allowed: {url!r}")
        self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    def resolve(self, host: str, port: int) -> list[Address]:
        """The addresses of a host, every one of them allowed; UnsafeUrl otherwise."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UnsafeUrl(f"the host {host!r} does not resolve: {exc.strerror}") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if host.lower() not in self.names:
            for address in addresses:
                if not self._allowed(address):
                    raise UnsafeUrl(f"the host {host!r} resolves to {address}, which is not a public address")
        return addresses

    def _allowed(self, address: Address) -> bool:
        if any(address in network for network in self.networks):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            if inner is not None:
                return self._allowed(inner)
            if any(address in network for network in _REFUSED_IPV6):
                return False
        return address.is_global and not address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form leads to: mapped, translated, compatible, NAT64 or 6to4; else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _LOW_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class _DeadlineStream(httpcore.NetworkStream):
    """A connection that ends at a fixed time, however slowly the other end sends or reads its bytes."""

    PIECE = 65536  # writes go in pieces, so a receiver that reads slowly meets the deadline too

    def __init__(self, stream: httpcore.NetworkStream, ends_at: float, deadline_s: float) -> None:
        self.stream = stream
        self.ends_at = ends_at
        self.deadline_s = deadline_s

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._within(timeout, httpcore.ReadTimeout, lambda left: self.stream.read(max_bytes, left))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), self.PIECE):
            piece = buffer[start : start + self.PIECE]
            self._within(timeout, httpcore.WriteTimeout, functools.partial(self.stream.write, piece))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        upgraded = self._within(
            timeout, httpcore.ConnectTimeout, lambda left: self.stream.start_tls(ssl_context, server_hostname, left)
        )
        return _DeadlineStream(upgraded, self.ends_at, self.deadline_s)

    def get_extra_info(self, info: str) -> Any:
        return self.stream.get_extra_info(info)

    def _within(self, timeout: float | None, error: type[httpcore.TimeoutException], call: Callable[[float], T]) -> T:
        left = self.ends_at - time.monotonic()
        message = f"the connection outlived its deadline of {self.deadline_s:g} s"
        if left <= 0:
            raise error(message)
        try:
            return call(left if timeout is None else min(timeout, left))
        except httpcore.TimeoutException:
            if time.monotonic() >= self.ends_at:
                raise error(message) from None
            raise


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy allows (within a deadline, if given)."""

    def __init__(self, policy: Policy, deadline_s: float | None = None) -> None:
        self.policy = policy
        self.deadline_s = deadline_s

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        opened = time.monotonic()
        try:
            addresses = self.policy.resolve(host, port)
        except UnsafeUrl as exc:
            raise httpcore.ConnectError(exc.message) from exc
        if self.deadline_s is None:
            # Connect to the address that was checked, not to a fresh resolution of the name.
            return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)
        ends_at = opened + self.deadline_s
        left = max(ends_at - time.monotonic(), 0.001)
        stream = super().connect_tcp(
            str(addresses[0]), port, left if timeout is None else min(timeout, left), local_address, socket_options
        )
        return _DeadlineStream(stream, ends_at, self.deadline_s)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable")


def client(policy: Policy, timeout: float, deadline_s: float | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client whose every connection, redirects included, obeys the policy; no proxies from the env.

    With `deadline_s`, no connection is kept for another request and each one ends that long after it was
    opened, so one request, from connecting to the last byte read, takes at most that long.
    """
    kept = 0 if deadline_s is not None else 20  # else httpx's default
    transport = httpx.HTTPTransport(
        trust_env=False, limits=httpx.Limits(max_connections=100, max_keepalive_connections=kept)
    )
    transport._pool._network_backend = _GuardedBackend(policy, deadline_s)
    return httpx.Client(transport=transport, timeout=timeout, trust_env=False, **kwargs)


def is_refusal(exc: BaseException) -> str | None:
    """The policy's reason if this error is a refused connection, else None."""
    for link in _chain(exc):
        if isinstance(link, UnsafeUrl):
            return link.message
    return None


def _chain(exc: BaseException | None) -> Sequence[BaseException]:
    links = []
    while exc is not None and exc not in links:
        links.append(exc)
        exc = exc.__cause__ or exc.__context__
    return links

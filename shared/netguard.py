"""Outbound URL safety: only http(s) to public addresses, checked where the connection is made.

Every address a name resolves to must be public (not loopback, private, link-local, multicast or
reserved), unless the host is on the allow-list. The check runs in the HTTP client's own connect
step, so it covers every redirect and a name that resolves differently the second time.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from shared.errors import UnsafeUrl

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = self.policy.resolve(host, port)
        except UnsafeUrl as exc:
            raise httpcore.ConnectError(exc.message) from exc
        # Connect to the address that was checked, not to a fresh resolution of the name.
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable")


def client(policy: Policy, timeout: float, **kwargs: Any) -> httpx.Client:
    """An httpx client whose every connection, redirects included, obeys the policy; no proxies from the env."""
    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool._network_backend = _GuardedBackend(policy)
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

"""An HTTP proxy on loopback for yt-dlp, so that every connection it opens is checked as our own client's are.

yt-dlp fetches pages, follows redirects and meta refreshes, and reads HLS and DASH manifests and their fragments
with its own HTTP stack. Pointed at this proxy, each of those connections is resolved here, checked against the
policy and made to the address that was checked. https passes through CONNECT (TLS stays end to end); a plain
http request is sent on to its origin and its connection closed after the one answer. The first refusal, or the
first error of the download's check (cancelled, too slow), stops every connection and is kept for the caller.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Callable
from types import TracebackType
from urllib.parse import urlsplit

from shared.errors import UnsafeUrl
from shared.netguard import Policy

Check = Callable[[], None]

# A connection waiting for data runs the check this often, so a trickle or a silence cannot outlast it.
_TICK_S = 0.25
_READ_BYTES = 64 * 1024
_MAX_HEAD_BYTES = 64 * 1024
# Headers about one hop, not passed on: the proxy closes each plain-http connection after one answer.
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"upgrade"}


class _BadRequest(Exception):
    """The client sent something that is not a proxy request we serve."""


class _Dropped(Exception):
    """This connection ends here: refused, unreachable, or the proxy has stopped."""


class EgressProxy:
    """A proxy on 127.0.0.1 whose every upstream connection obeys the policy; as a context, it serves in threads."""

    def __init__(self, policy: Policy, timeout_s: float, check: Check) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.check = check
        self.failure: Exception | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EgressProxy:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._stop(None)

    def raise_failure(self) -> None:
        """Raise what stopped the proxy (a refused address, a cancellation, the deadline), if anything did."""
        if self.failure is not None:
            raise self.failure

    def serve(self, client: socket.socket) -> None:
        """One client connection: read its request, connect where it asks if the policy allows, relay both ways."""
        upstream = None
        try:
            self._track(client)
            head, rest = self._read_head(client)
            host, port, forward = _parse_request(head)
            upstream = self._connect(client, host, port)
            self._track(upstream)
            if forward is None:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream.sendall(forward + rest)
                self._pass_answer_head(upstream, client)
            self._relay(client, upstream)
        except _BadRequest:
            _answer(client, 400, "Bad Request")
        except (_Dropped, OSError):
            pass
        except Exception as exc:  # the check's own error: cancelled, or out of time
            self._stop(exc)
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self._untrack(sock)
                    sock.close()

    def _connect(self, client: socket.socket, host: str, port: int) -> socket.socket:
        try:
            addresses = self.policy.resolve(host, port)
        except UnsafeUrl as exc:
            self._record(exc)  # before the answer, so the caller finds it when yt-dlp gives up
            _answer(client, 403, "Forbidden")
            self._stop(exc)
            raise _Dropped from exc
        try:
            # Connect to the address that was checked, not to a fresh resolution of the name.
            upstream = socket.create_connection((str(addresses[0]), port), timeout=self.timeout_s)
        except OSError as exc:
            _answer(client, 502, exc.strerror or type(exc).__name__)
            raise _Dropped from exc
        return upstream

    def _pass_answer_head(self, upstream: socket.socket, client: socket.socket) -> None:
        """The origin's status and headers, told that the connection closes after this answer."""
        try:
            head, rest = self._read_head(upstream)
        except _BadRequest as exc:
            _answer(client, 502, "Bad Gateway")
            raise _Dropped from exc
        client.sendall(_without_hop_headers(head) + b"\r\nConnection: close\r\n\r\n" + rest)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while True:
            for sock in self._wait(list(peers)):
                data = sock.recv(_READ_BYTES)
                if not data:
                    return
                peers[sock].sendall(data)

    def _read_head(self, sock: socket.socket) -> tuple[bytes, bytes]:
        """A message's head (up to its blank line) and whatever came after it."""
        data = b""
        while b"\r\n\r\n" not in data:
            self._wait([sock])
            chunk = sock.recv(_READ_BYTES)
            if not chunk or len(data) + len(chunk) > _MAX_HEAD_BYTES:
                raise _BadRequest
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _wait(self, sockets: list[socket.socket]) -> list[socket.socket]:
        """The sockets with data to read, once there are any; runs the check every tick while waiting."""
        while True:
            self.check()
            if self.failure is not None:
                raise _Dropped
            ready, _, _ = select.select(sockets, [], [], _TICK_S)
            if ready:
                return ready

    def _record(self, failure: Exception) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = failure

    def _stop(self, failure: Exception | None) -> None:
        """Keep the first failure and end every connection (each one's thread closes its own sockets)."""
        if failure is not None:
            self._record(failure)
        with self._lock:
            open_now = list(self._sockets)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _track(self, sock: socket.socket) -> None:
        sock.settimeout(self.timeout_s)
        with self._lock:
            self._sockets.add(sock)
        if self.failure is not None:
            raise _Dropped

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, proxy: EgressProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.proxy.serve(self.request)


def _parse_request(head: bytes) -> tuple[str, int, bytes | None]:
    """Host and port a proxy request is for, and for plain http the head to send its origin (None for CONNECT)."""
    try:
        method, target, version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
        if method == "CONNECT":
            parts = urlsplit(f"//{target}")
            port = parts.port or 443
        else:
            parts = urlsplit(target)
            port = parts.port or 80
    except (UnicodeDecodeError, ValueError) as exc:
        raise _BadRequest from exc
    if not parts.hostname or (method != "CONNECT" and parts.scheme != "http"):
        raise _BadRequest
    if method == "CONNECT":
        return parts.hostname, port, None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = _without_hop_headers(head).split(b"\r\n", 1)[1:]
    line = f"{method} {path} {version}".encode("ascii")
    return parts.hostname, port, b"\r\n".join([line, *headers, b"Connection: close"]) + b"\r\n\r\n"


def _without_hop_headers(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    return b"\r\n".join([lines[0], *kept])


def _answer(client: socket.socket, status: int, reason: str) -> None:
    """A bodiless answer from the proxy itself."""
    reason = "".join(char for char in reason if char.isascii() and char.isprintable()) or "Error"
    try:
        client.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    except OSError:
        pass

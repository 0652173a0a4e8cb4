"""Callback delivery against real receivers on loopback: deadlines, bounded answers, lapsed leases, signing."""

from __future__ import annotations

import base64
import hashlib
import socket
import socketserver
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from redis import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared import keys
from shared.schemas import Delivery
from shared.settings import ApiKey, Settings
from shared.stores import Stores
from tests.conftest import DATA, submit, wait_for
from worker.callbacks import Deliverer

DIGIT = DATA / "audio" / "fsdd" / "7_theo_0.wav"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
STATUS_LINE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"
ENDLESS_CAP = 64 * 1024 * 1024  # a guard so the test ends even against a client that reads everything


class RawReceiver(socketserver.ThreadingTCPServer):
    """A receiver that reads the request, then misbehaves as `answer` says; it counts what it sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: Callable[[socket.socket, RawReceiver], None]) -> None:
        super().__init__(("127.0.0.1", 0), _RawHandler)
        self.answer = answer
        self.requests = 0
        self.sent = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _RawHandler(socketserver.BaseRequestHandler):
    server: RawReceiver

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.request.recv(65536)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += self.request.recv(65536)
        self.server.requests += 1
        try:
            self.server.answer(self.request, self.server)
        except OSError:  # the client hung up: what a well-behaved deliverer does
            pass


def drip(sock: socket.socket, server: RawReceiver) -> None:
    """The status line one byte at a time, each well within any per-read timeout, for up to 30 s."""
    for byte in (STATUS_LINE * 100)[:120]:
        sock.sendall(bytes([byte]))
        server.sent += 1
        time.sleep(0.25)


def endless(sock: socket.socket, server: RawReceiver) -> None:
    """A 200, then a body that never ends (up to the guard)."""
    sock.sendall(STATUS_LINE)
    chunk = b"x" * 65536
    while server.sent < ENDLESS_CAP:
        sock.sendall(chunk)
        server.sent += len(chunk)


@pytest.fixture
def receivers() -> Iterator[Callable[[Callable[[socket.socket, RawReceiver], None]], RawReceiver]]:
    started: list[RawReceiver] = []

    def start(answer: Callable[[socket.socket, RawReceiver], None]) -> RawReceiver:
        started.append(RawReceiver(answer))
        return started[-1]

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def finished_task(api: httpx.Client, callback_url: str, headers: dict[str, str] | None = None) -> str:
    """A task that ended (cancelled while queued), so its callback is due."""
    task_id: str = submit(api, DIGIT, headers=headers, callback_url=callback_url, priority="low").json()["id"]
    assert api.post(f"/v1/tasks/{task_id}/cancel", headers=headers).status_code == 200
    return task_id


@contextmanager
def delivering(redis: Redis, settings: Settings) -> Iterator[Stores]:
    """A real Deliverer, as a worker runs it, for the duration of the block."""
    stores = Stores.open(redis, settings)
    deliverer = Deliverer(stores, settings)
    deliverer.start()
    try:
        yield stores
    finally:
        deliverer.stop()


def callback(api: httpx.Client, task_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = api.get(f"/v1/tasks/{task_id}", headers=headers).json()["callback"]
    return info


def test_a_dripping_receiver_is_cut_off_at_the_deadline_and_fails_at_the_limit(
    api: httpx.Client,
    served: Callable[[str], None],
    receivers: Callable[..., RawReceiver],
    redis: Redis,
    settings: Settings,
) -> None:
    served("tiny.en")
    receiver = receivers(drip)
    task_id = finished_task(api, receiver.url)
    settings = settings.model_copy(
        update={"callback_timeout_s": 1.0, "callback_max_attempts": 2, "callback_backoff_s": 0.05}
    )
    with delivering(redis, settings):
        wait_for(lambda: callback(api, task_id)["status"] == "failed", timeout_s=15)
    deliveries = [Delivery.model_validate(d) for d in callback(api, task_id)["deliveries"]]
    assert len(deliveries) == 2 and receiver.requests == 2
    for delivery in deliveries:
        assert delivery.status_code is None and delivery.error and "deadline" in delivery.error, delivery
        assert 1000 <= delivery.duration_ms < 2000, delivery


def test_an_endless_answer_is_not_read(
    api: httpx.Client,
    served: Callable[[str], None],
    receivers: Callable[..., RawReceiver],
    redis: Redis,
    settings: Settings,
) -> None:
    served("tiny.en")
    receiver = receivers(endless)
    task_id = finished_task(api, receiver.url)
    stores = Stores.open(redis, settings)
    tracemalloc.start()
    try:
        with delivering(redis, settings):
            wait_for(lambda: stores.callbacks.deliveries(task_id), timeout_s=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [delivery] = stores.callbacks.deliveries(task_id)
    assert delivery.status_code == 200 and delivery.error is None
    assert peak < 1024 * 1024, f"{peak} bytes held while delivering"
    assert callback(api, task_id)["status"] == "delivered"


def test_a_lapsed_lease_counts_as_an_attempt(
    api: httpx.Client, served: Callable[[str], None], redis: Redis, settings: Settings
) -> None:
    served("tiny.en")
    task_id = finished_task(api, "http://127.0.0.1:9/hook")
    settings = settings.model_copy(update={"callback_max_attempts": 2, "callback_backoff_s": 0.05})
    queue = Stores.open(redis, settings).callbacks

    lease = queue.claim(lease_s=0.2)
    assert lease, "a deliverer takes it, then stalls before recording anything"
    wait_for(queue.release_expired_leases)
    [lapsed] = queue.deliveries(task_id)
    assert lapsed.status_code is None and lapsed.error and "lease" in lapsed.error
    assert lapsed.event == "task.cancelled"
    assert callback(api, task_id)["status"] == "pending"
    assert api.get(f"/v1/tasks/{task_id}").json()["callback"]["deliveries"][0]["error"] == lapsed.error
    late = Delivery(at=lapsed.at, event="task.cancelled", status_code=200, duration_ms=300)
    assert queue.record(lease, late, retry=False) is None, "the stalled deliverer's lease was counted already"
    assert len(queue.deliveries(task_id)) == 1

    wait_for(lambda: queue.claim(lease_s=0.2), timeout_s=5)  # the retry comes due after its backoff
    wait_for(queue.release_expired_leases)
    assert len(queue.deliveries(task_id)) == 2
    assert callback(api, task_id)["status"] == "failed", "the attempt limit applies to lapsed leases"
    assert queue.claim(lease_s=0.2) is None and queue.release_expired_leases() == 0
    assert redis.hget(keys.metrics_counter_key("callbacks"), "lease_lapsed") == b"2"


class Verifier(BaseHTTPRequestHandler):
    """Answers 200 to every callback and records whether its signature verifies with SECRET."""

    verified: list[bool] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            Webhook(SECRET).verify(body, dict(self.headers.items()))
            self.verified.append(True)
        except WebhookVerificationError:
            self.verified.append(False)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_a_worker_with_only_redis_signs_with_the_secret_the_api_recorded(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
    redis: Redis,
) -> None:
    served("tiny.en")
    key = ApiKey(name="alice", sha256=hashlib.sha256(b"wq_alice").hexdigest(), webhook_secret=SECRET)
    api = api_factory(api_keys=[key], require_api_key=True)
    verifier: type[Verifier] = type("TestVerifier", (Verifier,), {"verified": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), verifier)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alice = {"Authorization": "Bearer wq_alice"}
    try:
        task_id = finished_task(api, f"http://127.0.0.1:{server.server_address[1]}/hook", alice)
        start_worker(burst=False)  # the fixture's settings: Redis and the volume, no keys and no secret
        wait_for(lambda: callback(api, task_id, alice)["status"] == "delivered", timeout_s=60)
    finally:
        server.shutdown()
        server.server_close()
    assert verifier.verified == [True]
    assert SECRET not in api.get(f"/v1/tasks/{task_id}", headers=alice).text
    assert api.delete(f"/v1/tasks/{task_id}", headers=alice).status_code == 204
    assert [key for key in redis.scan_iter(f"{keys.PREFIX}:*") if task_id.encode() in key] == []


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_not base64 at all!",
        "whsec_" + "A" * 17,  # base64 alphabet, but no whole number of bytes
        "whsec_",
        base64.b64encode(b"0123456789abcdef").decode(),  # no whsec_ prefix
    ],
)
def test_a_malformed_webhook_secret_stops_start_up(secret: str) -> None:
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(_env_file=None, webhook_secret=secret)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="webhook_secret"):
        ApiKey(name="alice", sha256="0" * 64, webhook_secret=secret)


def test_a_wellformed_webhook_secret_is_accepted() -> None:
    unpadded = "whsec_" + base64.b64encode(b"0123456789abcdef0").decode().rstrip("=")
    for secret in (SECRET, unpadded):
        assert Settings(_env_file=None, webhook_secret=secret).webhook_secret == secret  # type: ignore[call-arg]
        assert ApiKey(name="alice", sha256="0" * 64, webhook_secret=secret).webhook_secret == secret

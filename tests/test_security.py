"""Security over real HTTP on loopback: key isolation, rate limits, SSRF refusals, signed callbacks with retries."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.errors import UnsafeUrl
from shared.netguard import Policy, client
from shared.settings import ApiKey, Settings
from tests.conftest import DATA, JFK, submit, wait_for

DIGIT = DATA / "audio" / "fsdd" / "7_theo_0.wav"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KEYS = {"alice": "wq_alice_key", "bob": "wq_bob_key", "root": "wq_root_key"}


def key_entry(name: str, **extra: Any) -> ApiKey:
    return ApiKey(name=name, sha256=hashlib.sha256(KEYS[name].encode()).hexdigest(), **extra)


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def keyed(api_factory: Callable[..., httpx.Client], served: Callable[[str], None]) -> httpx.Client:
    served("tiny.en")
    keys = [key_entry("alice", webhook_secret=SECRET), key_entry("bob"), key_entry("root", admin=True)]
    return api_factory(api_keys=keys, require_api_key=True)


def test_keys_isolate_tasks(keyed: httpx.Client) -> None:
    mine = submit(keyed, DIGIT, headers=as_("alice")).json()
    assert mine["owner"] == "alice"
    theirs = submit(keyed, DIGIT, headers=as_("bob")).json()["id"]
    task_id = mine["id"]

    for method, path in [
        ("GET", f"/v1/tasks/{task_id}"),
        ("GET", f"/v1/tasks/{task_id}/result"),
        ("POST", f"/v1/tasks/{task_id}/cancel"),
        ("DELETE", f"/v1/tasks/{task_id}"),
        ("POST", f"/v1/tasks/{task_id}/callback/redeliver"),
    ]:
        response = keyed.request(method, path, headers=as_("bob"))
        assert response.status_code == 404 and response.json()["error"]["code"] == "task_not_found", path
    assert [t["id"] for t in keyed.get("/v1/tasks", headers=as_("bob")).json()["tasks"]] == [theirs]
    assert [t["id"] for t in keyed.get("/v1/tasks", headers=as_("alice")).json()["tasks"]] == [task_id]
    assert keyed.get("/v1/tasks", headers=as_("root")).json()["total"] == 2
    assert keyed.get(f"/v1/tasks/{task_id}", headers=as_("root")).status_code == 200
    assert keyed.get(f"/v1/tasks/{task_id}", headers=as_("alice")).json()["status"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer  x y"}],
)
def test_requests_without_a_valid_key_are_401(keyed: httpx.Client, headers: dict[str, str]) -> None:
    for response in (
        keyed.get("/v1/tasks", headers=headers),
        submit(keyed, DIGIT, headers=headers),
        keyed.post("/v1/audio/extract", headers=headers),
    ):
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"


def test_health_and_docs_stay_open(keyed: httpx.Client) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/docs").status_code == 200 and keyed.get("/openapi.json").status_code == 200


def test_rate_limit_and_queue_quota_per_key(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], settings: Settings
) -> None:
    served("tiny.en")
    api = api_factory(
        api_keys=[key_entry("alice", requests_per_minute=3), key_entry("bob", max_queued=1)], require_api_key=True
    )
    answers = [api.get("/v1/tasks", headers=as_("alice")).status_code for _ in range(4)]
    assert answers[:3] == [200, 200, 200] and answers[3] == 429
    limited = api.get("/v1/tasks", headers=as_("alice"))
    assert limited.json()["error"]["code"] == "rate_limited" and 0 < int(limited.headers["retry-after"]) <= 60
    assert api.get("/v1/tasks", headers=as_("bob")).status_code == 200, "another key has its own budget"

    assert submit(api, DIGIT, headers=as_("bob")).status_code == 202
    full = submit(api, DIGIT, headers=as_("bob"))
    assert full.status_code == 429 and "1 tasks queued" in full.json()["error"]["message"]
    assert len(list(settings.uploads.iterdir())) == 1


def test_uploaded_names_never_become_paths(keyed: httpx.Client, settings: Settings) -> None:
    for name in ("../../escape.wav", "/etc/passwd", "..\\..\\x.wav", "a/../../b.wav"):
        with DIGIT.open("rb") as handle:
            response = keyed.post("/v1/tasks", files={"file": (name, handle)}, headers=as_("alice"))
        assert response.status_code == 202 and response.json()["source"]["filename"] == name
    stored = list(settings.uploads.iterdir())
    assert len(stored) == 4 and all(p.parent == settings.uploads and len(p.name) == 32 for p in stored)
    assert not (settings.uploads.parent / "escape.wav").exists()


UNSAFE = [
    "http://127.0.0.1:8000/x.mp3",
    "http://localhost/x.mp3",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/x.mp3",
    "http://192.168.1.10/x.mp3",
    "http://172.16.0.1/x",
    "http://[::1]/x.mp3",
    "http://[::ffff:127.0.0.1]/x.mp3",
    "http://0.0.0.0/x.mp3",
    "http://224.0.0.1/x.mp3",
    "http://240.0.0.1/x.mp3",
    "http://100.64.0.1/x.mp3",
    "file:///etc/passwd",
    "ftp://example.com/x.mp3",
    "gopher://127.0.0.1:6379/_INFO",
]


@pytest.mark.parametrize("url", UNSAFE)
def test_unsafe_urls_are_refused_at_submission(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], settings: Settings, url: str
) -> None:
    served("tiny.en")
    api = api_factory(allowed_hosts=[])
    for fields in ({"url": url}, {"callback_url": url}):
        response = api.post(
            "/v1/tasks",
            data=fields,
            files={"file": ("a.wav", DIGIT.read_bytes())} if "callback_url" in fields else None,
        )
        assert response.status_code == 422, (fields, response.text)
        assert response.json()["error"]["code"] in ("unsafe_url", "invalid_request")
    assert api.get("/v1/tasks").json()["total"] == 0
    assert list(settings.uploads.iterdir()) == []


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def fake(host: str, *args: Any, **kwargs: Any) -> Any:
        table = {"media.example": "10.1.2.3", "cdn.example": "93.184.216.34", "mixed.example": "10.9.9.9"}
        if host in table:
            extra = (
                [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))] if host == "mixed.example" else []
            )
            return extra + [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    policy = Policy()
    with pytest.raises(UnsafeUrl, match="10.1.2.3"):
        policy.check_url("http://media.example/talk.mp3")
    with pytest.raises(UnsafeUrl, match="10.9.9.9"):
        policy.check_url("https://mixed.example/talk.mp3")
    policy.check_url("https://cdn.example/talk.mp3")
    Policy(["media.example"]).check_url("http://media.example/talk.mp3")
    Policy(["10.0.0.0/8"]).check_url("http://media.example/talk.mp3")


class Redirector(BaseHTTPRequestHandler):
    """Answers every request with a redirect to `target`."""

    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[str]:
    """Media and a page on 127.0.0.1 (a loopback address the SSRF tests do not allow)."""
    shutil.copy(JFK, tmp_path / "jfk.flac")
    shutil.copy(DATA / "video" / "bbb_with_jfk_speech.mp4", tmp_path / "bbb.mp4")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_on(host: str, handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


def test_a_redirect_to_a_refused_address_is_refused(media_server: str) -> None:
    handler = type("ToLoopback", (Redirector,), {"target": f"{media_server}/jfk.flac"})
    server, allowed = serve_on("127.0.0.2", handler)
    try:
        with client(Policy(["127.0.0.2"]), timeout=5) as http:
            with pytest.raises(httpx.ConnectError, match="127.0.0.1"):
                http.get(f"{allowed}/start", follow_redirects=True)
            assert http.get(f"{allowed}/start").status_code == 302, "the allowed host itself is reachable"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_worker_refuses_redirects_and_page_media_pointing_inside(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    media_server: str,
    start_worker: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    served("tiny.en")
    redirect = type("ToLoopback", (Redirector,), {"target": f"{media_server}/jfk.flac"})
    redirector, redirect_url = serve_on("127.0.0.2", redirect)
    page_dir = tmp_path / "page"
    page_dir.mkdir()
    (page_dir / "watch.html").write_text(f'<html><body><video src="{media_server}/bbb.mp4"></video></body></html>')
    page_server = ThreadingHTTPServer(("127.0.0.2", 0), functools.partial(QuietFiles, directory=str(page_dir)))
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    page_url = f"http://127.0.0.2:{page_server.server_address[1]}/watch.html"
    try:
        api = api_factory(allowed_hosts=["127.0.0.2"])
        ids = [api.post("/v1/tasks", data={"url": url}).json()["id"] for url in (f"{redirect_url}/a.flac", page_url)]
        assert start_worker(allowed_hosts=["127.0.0.2"]).wait(timeout=120) == 0
        for task_id in ids:
            error = api.get(f"/v1/tasks/{task_id}").json()["error"]
            assert error["code"] == "unsafe_url" and "127.0.0.1" in error["message"], error
    finally:
        for server in (redirector, page_server):
            server.shutdown()
            server.server_close()


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that checks signatures, fails the first `failures` requests, and records all."""

    failures = 0
    answer = 200
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        msg_id = self.headers["webhook-id"]
        try:  # the reference implementation, with its timestamp tolerance
            Webhook(SECRET).verify(body, dict(self.headers.items()))
            valid = True
        except WebhookVerificationError:
            valid = False
        failing = len(self.received) < self.failures
        self.received.append({"id": msg_id, "valid": valid, "body": json.loads(body), "failed": failing})
        self.send_response(500 if failing else self.answer if valid else 401)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[type[Receiver], str]]:
    handler = type("TestReceiver", (Receiver,), {"received": [], "failures": 0, "answer": 200})
    server, url = serve_on("127.0.0.1", handler)
    yield handler, f"{url}/hooks/whisperq"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_callbacks_are_signed_retried_logged_and_redelivered(
    keyed: httpx.Client,
    receiver: tuple[type[Receiver], str],
    start_worker: Callable[..., subprocess.Popen[str]],
    settings: Settings,
) -> None:
    handler, url = receiver
    handler.failures = 2
    task_id = submit(keyed, JFK, callback_url=url, headers=as_("alice")).json()["id"]
    start_worker(burst=False, callback_backoff_s=0.2, api_keys=[key_entry("alice", webhook_secret=SECRET)])

    task = wait_for(
        lambda: (
            (t := keyed.get(f"/v1/tasks/{task_id}", headers=as_("alice")).json())["callback"]["status"] == "delivered"
            and t
        ),
        timeout_s=60,
    )
    assert [(r["valid"], r["failed"]) for r in handler.received] == [(True, True), (True, True), (True, False)]
    assert {r["id"] for r in handler.received} == {f"msg_{task_id}"}
    body = handler.received[-1]["body"]
    assert body["type"] == "task.completed" and body["data"]["task"]["id"] == task_id
    assert "ask not what your country" in body["data"]["task"]["result"]["text"]
    assert body["data"]["result_url"].endswith(f"/v1/tasks/{task_id}/result")
    deliveries = task["callback"]["deliveries"]
    assert [d["status_code"] for d in deliveries] == [500, 500, 200] and all(d["at"] for d in deliveries)

    again = keyed.post(f"/v1/tasks/{task_id}/callback/redeliver", headers=as_("alice"))
    assert again.status_code == 200
    wait_for(lambda: len(handler.received) == 4)
    wait_for(lambda: len(keyed.get(f"/v1/tasks/{task_id}", headers=as_("alice")).json()["callback"]["deliveries"]) == 4)


@pytest.mark.slow
def test_callbacks_for_failure_and_cancellation_and_no_retry_on_4xx(
    api: httpx.Client,
    served: Callable[[str], None],
    receiver: tuple[type[Receiver], str],
    start_worker: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    served("tiny.en")
    handler, url = receiver
    handler.answer = 410
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC" + bytes(range(256)) * 8)
    cancelled = submit(api, DIGIT, callback_url=url, priority="low").json()["id"]
    assert api.post(f"/v1/tasks/{cancelled}/cancel").status_code == 200
    failed = submit(api, broken, callback_url=url).json()["id"]
    start_worker(burst=False, callback_backoff_s=0.2, webhook_secret=SECRET)

    def status(task_id: str) -> Any:
        return api.get(f"/v1/tasks/{task_id}").json()["callback"]["status"]

    wait_for(lambda: status(cancelled) == "failed" and status(failed) == "failed", timeout_s=60)
    events = sorted(r["body"]["type"] for r in handler.received)
    assert events == ["task.cancelled", "task.failed"], "a 410 is final: one attempt each"
    assert all(r["valid"] for r in handler.received), "signed with the service-wide secret"


@pytest.mark.slow
def test_two_workers_deliver_each_callback_once(
    api: httpx.Client,
    served: Callable[[str], None],
    receiver: tuple[type[Receiver], str],
    start_worker: Callable[..., subprocess.Popen[str]],
) -> None:
    served("tiny.en")
    handler, url = receiver
    ids = [submit(api, DIGIT, callback_url=url).json()["id"] for _ in range(4)]
    for _ in range(2):
        start_worker(burst=False, webhook_secret=SECRET)
    wait_for(
        lambda: all(api.get(f"/v1/tasks/{i}").json()["callback"]["status"] == "delivered" for i in ids), timeout_s=90
    )
    assert sorted(r["id"] for r in handler.received) == sorted(f"msg_{i}" for i in ids)

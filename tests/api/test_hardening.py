"""The ingress under abuse: bounded forms, clean names, keys, stream and summary caps, idempotent submits."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from redis import Redis
from rq import Queue
from websockets.sync.client import connect as ws_connect

from shared import keys
from shared.enums import Priority
from shared.settings import ApiKey, Settings
from tests.api.test_socket_upload import messages, socket_url
from tests.conftest import DATA, submit, wait_for

DIGIT = DATA / "audio" / "fsdd" / "7_theo_0.wav"


def uploads(settings: Settings) -> list[str]:
    return sorted(path.name for path in settings.uploads.iterdir()) if settings.uploads.exists() else []


@pytest.mark.parametrize(
    "parts",
    [
        [("prompt[]", "x") for _ in range(500)],  # many short parts under one array name
        [("prompt[]", "x" * 60_000) for _ in range(20)],  # each part under the field limit, together 1.2 MB
    ],
    ids=["count", "bytes"],
)
def test_array_fields_count_against_the_form_limits(
    api: httpx.Client, served: Callable[[str], None], settings: Settings, parts: list[tuple[str, str]]
) -> None:
    served("tiny.en")
    files: list[tuple[str, Any]] = [("file", ("a.wav", DIGIT.read_bytes())), *((n, (None, v)) for n, v in parts)]
    response = api.post("/v1/tasks", files=files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "at most" in error["message"], error
    assert uploads(settings) == []


def raw_upload(api: httpx.Client, filename: bytes) -> httpx.Response:
    """A multipart upload written by hand, so the file name reaches the server byte for byte."""
    boundary = b"whisperqboundary"
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n',
            b"Content-Type: audio/wav\r\n\r\n",
            DIGIT.read_bytes(),
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
    content_type = f"multipart/form-data; boundary={boundary.decode()}"
    return api.post("/v1/tasks", content=body, headers={"content-type": content_type})


def test_display_names_lose_control_characters(api: httpx.Client, served: Callable[[str], None]) -> None:
    served("tiny.en")
    response = raw_upload(api, b"a\x00b\x07c\x1b[31m\x7fd\xe2\x80\xaee.wav")
    assert response.status_code == 202, response.text
    name = response.json()["source"]["filename"]
    assert name == "a_b_c_[31m_d_e.wav", name
    listed = api.get("/v1/tasks").json()["tasks"][0]["source"]["filename"]
    assert listed == name


def test_no_key_may_be_named_like_the_anonymous_owner() -> None:
    digest = hashlib.sha256(b"k").hexdigest()
    for name in ("anonymous", "Anonymous"):
        with pytest.raises(ValidationError, match="reserved"):
            ApiKey(name=name, sha256=digest)
    with pytest.raises(ValidationError, match="reserved"):
        Settings(_env_file=None, api_keys=[{"name": "anonymous", "sha256": digest}])  # type: ignore[call-arg]


@pytest.mark.parametrize("last_event_id", ["abc", "1-2-3", "-1", "1700000000000-x", "9" * 40])
def test_a_malformed_last_event_id_is_refused_before_the_stream(
    api: httpx.Client, served: Callable[[str], None], last_event_id: str
) -> None:
    served("tiny.en")
    task_id = submit(api, DIGIT).json()["id"]
    response = api.get(f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.fixture
def open_streams() -> Iterator[list[Any]]:
    """Event streams held open by a test, closed at its end."""
    opened: list[Any] = []
    yield opened
    for context in opened:
        context.__exit__(None, None, None)


def open_stream(api: httpx.Client, task_id: str, opened: list[Any]) -> httpx.Response:
    context = api.stream("GET", f"/v1/tasks/{task_id}/events")
    response = context.__enter__()
    opened.append(context)
    return response


def test_event_streams_are_capped_per_key_and_end_after_their_lifetime(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], open_streams: list[Any]
) -> None:
    served("tiny.en")
    api = api_factory(max_streams_per_key=2)
    task_id = submit(api, DIGIT).json()["id"]
    held = [open_stream(api, task_id, open_streams) for _ in range(2)]
    assert [response.status_code for response in held] == [200, 200]
    refused = api.get(f"/v1/tasks/{task_id}/events")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_concurrent", refused.text
    open_streams.pop(0).__exit__(None, None, None)  # a client goes away: its slot comes back
    wait_for(lambda: open_stream(api, task_id, open_streams).status_code == 200)

    brief = api_factory(stream_max_s=0.5)
    with brief.stream("GET", f"/v1/tasks/{task_id}/events") as response:
        events = [line for line in response.iter_lines() if line.startswith("event:")]
    assert events == ["event: status"], "the stream ended by its lifetime, without a final event"


class SlowChat(BaseHTTPRequestHandler):
    """A chat endpoint that answers only once the test lets it."""

    arrived: list[str] = []
    release = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.arrived.append(self.headers.get("authorization", ""))
        self.release.wait(timeout=300)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Short."}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ChatServer(ThreadingHTTPServer):
    request_queue_size = 128  # all 48 summaries connect at once; a short backlog would drop their SYNs


@pytest.fixture
def slow_chat() -> Iterator[tuple[str, type[SlowChat]]]:
    handler = type("Chat", (SlowChat,), {"arrived": [], "release": threading.Event()})
    server = ChatServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    handler.release.set()
    server.shutdown()
    server.server_close()


def test_slow_summaries_are_capped_per_key_and_never_stall_the_api(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
    slow_chat: tuple[str, type[SlowChat]],
) -> None:
    served("tiny.en")
    url, chat = slow_chat
    names = [f"k{index}" for index in range(12)]
    api_keys = [ApiKey(name=name, sha256=hashlib.sha256(name.encode()).hexdigest(), admin=True) for name in names]
    api = api_factory(api_keys=api_keys, llm_base_url=url, llm_model="slow", llm_timeout_s=300, max_summaries_per_key=4)
    task_id = submit(api, DIGIT, headers={"Authorization": "Bearer k0"}).json()["id"]
    assert start_worker().wait(timeout=120) == 0

    def summarise(name: str) -> int:
        path = f"/v1/tasks/{task_id}/summary"
        return api.post(path, headers={"Authorization": f"Bearer {name}"}, timeout=300).status_code

    with ThreadPoolExecutor(max_workers=48) as pool:
        answers = [pool.submit(summarise, name) for name in names for _ in range(4)]  # 48: past the API's 40 threads
        wait_for(lambda: len(chat.arrived) == 48, timeout_s=150)
        assert api.get("/health", timeout=10).status_code == 200, "the API answers while summaries wait"
        over = api.post(f"/v1/tasks/{task_id}/summary", headers={"Authorization": "Bearer k0"})
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_concurrent", over.text
        chat.release.set()
        assert [answer.result() for answer in answers] == [200] * 48


def test_tasks_for_configured_models_are_accepted_while_no_worker_is_live(
    api_factory: Callable[..., httpx.Client], start_worker: Callable[..., subprocess.Popen[str]]
) -> None:
    api = api_factory(served_models=["base"])
    health = api.get("/health").json()
    assert health["workers"] == [] and health["models_without_workers"] == ["base", "tiny.en"]
    queued = submit(api, DIGIT)  # the default model, tiny.en
    assert queued.status_code == 202 and queued.json()["status"] == "queued", queued.text
    assert submit(api, DIGIT, model="base").status_code == 202
    refused = submit(api, DIGIT, model="small")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "model_not_served"
    assert "base, tiny.en" in refused.json()["error"]["message"]
    english_only = submit(api, DIGIT, language="fr")
    assert english_only.status_code == 422, "tiny.en is English-only, worker or not"

    assert start_worker().wait(timeout=120) == 0  # the worker comes up later and takes the queued task
    done = api.get(f"/v1/tasks/{queued.json()['id']}").json()
    assert done["status"] == "completed" and done["result"]["text"].strip(" .").lower() in ("7", "seven")


def test_a_retried_submit_with_the_same_idempotency_key_returns_the_first_task(
    api: httpx.Client, served: Callable[[str], None], redis: Redis, settings: Settings
) -> None:
    served("tiny.en")
    first = submit(api, DIGIT, headers={"Idempotency-Key": "order-17"}, priority="high")
    again = submit(api, DIGIT, headers={"Idempotency-Key": "order-17"}, priority="high")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert api.get("/v1/tasks").json()["total"] == 1 and len(uploads(settings)) == 1
    assert Queue(keys.queue_name("tiny.en", Priority.HIGH), connection=redis).count == 1

    changed = submit(api, DIGIT, headers={"Idempotency-Key": "order-17"}, priority="low")
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict", changed.text
    assert len(uploads(settings)) == 1, "the refused retry's upload is not kept"
    other = submit(api, DIGIT, headers={"Idempotency-Key": "order-18"}, priority="high")
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    bad = submit(api, DIGIT, headers={"Idempotency-Key": "x" * 300})
    assert bad.status_code == 422


def test_idempotency_keys_belong_to_their_owner_and_cover_the_openai_routes(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None]
) -> None:
    served("tiny.en")
    names = ["alice", "bob"]
    api_keys = [ApiKey(name=name, sha256=hashlib.sha256(name.encode()).hexdigest()) for name in names]
    api = api_factory(api_keys=api_keys, require_api_key=True)

    def openai(name: str) -> httpx.Response:
        with DIGIT.open("rb") as handle:
            return api.post(
                "/v1/audio/transcriptions",
                files={"file": ("a.wav", handle)},
                data={"model": "tiny.en", "callback_url": "http://127.0.0.1:9/hook"},
                headers={"Authorization": f"Bearer {name}", "Idempotency-Key": "same"},
            )

    alice = [openai("alice") for _ in range(2)]
    bob = openai("bob")
    assert [answer.status_code for answer in (*alice, bob)] == [202, 202, 202]
    assert alice[0].json()["id"] == alice[1].json()["id"] != bob.json()["id"]
    listed = api.get("/v1/tasks", headers={"Authorization": "Bearer alice"}).json()
    assert listed["total"] == 1


def stalled_http_upload(port: int, settings: Settings) -> bytes:
    """Send a form's headers and the start of its file, then nothing more (a client gone without closing its
    connection); the server's whole answer."""
    head = b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    request = b"POST /v1/tasks HTTP/1.1\r\nHost: whisperq\r\nContent-Type: multipart/form-data; boundary=bnd\r\n"
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(request + b"Content-Length: 100000\r\n\r\n" + head + DIGIT.read_bytes()[:5000])
        wait_for(lambda: [name for name in uploads(settings) if name.endswith(".part")], timeout_s=3)
        conn.settimeout(60)
        answer = b""
        while b"}}" not in answer and (received := conn.recv(4096)):
            answer += received
        return answer


def test_a_stalled_upload_is_dropped_and_leaves_nothing(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], settings: Settings
) -> None:
    served("tiny.en")
    api = api_factory(upload_idle_s=3.0)
    answer = stalled_http_upload(api.base_url.port or 80, settings)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "upload_stalled" and "3 s" in body["error"]["message"], body
    assert uploads(settings) == [], "the partial file is gone"
    with ws_connect(socket_url(api)) as upload_socket:  # the upload socket: the fields, a frame, then nothing
        upload_socket.send(json.dumps({"model": "tiny.en"}))
        upload_socket.send(DIGIT.read_bytes()[:5000])
        error = messages(upload_socket)[-1]
        assert (error["code"], upload_socket.close_code) == ("upload_stalled", 4408)
    assert uploads(settings) == [] and api.get("/v1/tasks").json()["tasks"] == []

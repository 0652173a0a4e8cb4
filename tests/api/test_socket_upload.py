"""Upload over a WebSocket (/v1/tasks/ws): fields, media frames, end; the task back, then its events to the end."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from shared.settings import ApiKey
from tests.conftest import JFK, StartWorker

CHUNK = 32 * 1024
KEY = "wq_socket-test-key"


def socket_url(api: httpx.Client) -> str:
    return f"ws://127.0.0.1:{api.base_url.port}/v1/tasks/ws"


def send_upload(socket: ClientConnection, path: Path, **fields: Any) -> None:
    socket.send(json.dumps(fields))
    data = path.read_bytes()
    for start in range(0, len(data), CHUNK):
        socket.send(data[start : start + CHUNK])
    socket.send(json.dumps({"type": "end"}))


def messages(socket: ClientConnection) -> list[dict[str, Any]]:
    """Every message until the server closes the socket."""
    received = []
    try:
        while True:
            received.append(json.loads(socket.recv(timeout=180)))
    except ConnectionClosed:
        return received


@pytest.mark.slow
def test_a_file_in_its_task_and_events_out(
    api: httpx.Client, served: Callable[[str], None], start_worker: StartWorker
) -> None:
    served("tiny.en")
    with connect(socket_url(api)) as socket:
        send_upload(socket, JFK, model="tiny.en", language="en", priority="high", word_timestamps=True)
        first = json.loads(socket.recv(timeout=60))
        assert first["type"] == "task" and first["task"]["status"] == "queued", first
        worker = start_worker()
        events = messages(socket)
        assert socket.close_code == 1000
    assert worker.wait(timeout=120) == 0
    kinds = [event["type"] for event in events]
    assert kinds[0] == "status" and kinds[-1] == "final" and "segment" in kinds, kinds
    segments = [event["data"] for event in events if event["type"] == "segment"]
    assert segments[-1]["progress"] > 0.9 and "ask not" in " ".join(s["segment"]["text"] for s in segments)
    final = events[-1]["data"]
    assert final["id"] == first["task"]["id"] and final["status"] == "completed"
    assert "ask not what your country" in final["result"]["text"]
    assert final["options"]["word_timestamps"] is True and final["priority"] == "high"


def refused(url: str, upload: Path | None, fields: dict[str, Any], **connect_args: Any) -> tuple[dict[str, Any], int]:
    with connect(url, **connect_args) as socket:
        if upload is not None:
            try:
                send_upload(socket, upload, **fields)
            except ConnectionClosed:
                pass  # refused before the whole file was sent
        received = messages(socket)
        assert socket.close_code is not None
        return received[-1], socket.close_code


def test_the_socket_refuses_what_http_refuses(
    api_factory: Callable[..., httpx.Client], tmp_path: Path, settings: Any
) -> None:
    api = api_factory(max_upload_bytes=100_000)
    url = socket_url(api)
    error, code = refused(url, JFK, {})
    assert (error["code"], code) == ("file_too_large", 4413)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all " * 100)
    error, code = refused(url, text, {})
    assert (error["code"], code) == ("unsupported_media", 4415)
    error, code = refused(url, text, {"model": "nope", "beam_size": 0})
    assert (error["code"], code) == ("invalid_request", 4422) and len(error["details"]) >= 1
    assert list(settings.uploads.iterdir()) == [], "nothing refused is left on the volume"


def test_a_key_by_header_or_by_subprotocol(api_factory: Callable[..., httpx.Client]) -> None:
    alice = ApiKey(name="alice", sha256=hashlib.sha256(KEY.encode()).hexdigest())
    api = api_factory(api_keys=[alice], require_api_key=True)
    url = socket_url(api)
    error, code = refused(url, JFK, {})
    assert (error["code"], code) == ("unauthorized", 4401)
    error, code = refused(url, JFK, {}, additional_headers={"Authorization": "Bearer wrong"})
    assert (error["code"], code) == ("unauthorized", 4401)
    protocol = f"whisperq.bearer.{KEY}"
    with connect(url, subprotocols=[protocol]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == protocol
        send_upload(socket, JFK, model="tiny.en")
        assert json.loads(socket.recv(timeout=60))["task"]["status"] == "queued"
    assert api.get("/v1/tasks", headers={"Authorization": f"Bearer {KEY}"}).json()["total"] == 1

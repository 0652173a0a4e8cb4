"""The OpenAI-compatible API with the official `openai` client, and live status over server-sent events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DATA, JFK, StartWorker, submit, wait_for

pytestmark = pytest.mark.slow

SPANISH = DATA / "audio" / "picovoice_cheetah" / "test_es_norm.wav"
LONG = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]


@pytest.fixture
def live(api: httpx.Client, start_worker: Callable[..., subprocess.Popen[str]]) -> httpx.Client:
    """The API with a tiny.en and a base worker running."""
    start_worker("tiny.en", burst=False)
    start_worker("base", burst=False)
    wait_for(lambda: api.get("/health").json()["models"] == ["base", "tiny.en"], timeout_s=60)
    return api


def check_format(fmt: str, answer: Any, words: tuple[str, ...]) -> None:
    text = answer if isinstance(answer, str) else answer.text
    assert all(word in text.lower() for word in words), (fmt, text)
    if fmt == "srt":
        assert text.startswith("1\n00:00:00,000 --> ")
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n\n00:00:00.000 --> ")


def test_openai_client_transcribes_and_translates_in_every_format(live: httpx.Client) -> None:
    with OpenAI(base_url=f"{live.base_url}/v1", api_key="not-needed", max_retries=0) as client:
        openai_round(client)


def openai_round(client: OpenAI) -> None:
    assert {"base", "tiny.en"} <= {model.id for model in client.models.list()}
    for fmt in FORMATS:
        with JFK.open("rb") as handle:
            answer = client.audio.transcriptions.create(model="tiny.en", file=handle, response_format=fmt)
        check_format(fmt, answer, ("ask not what your country",))
        with SPANISH.open("rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the client marks translations deprecated
            answer = client.audio.translations.create(model="base", file=handle, response_format=fmt)
        check_format(fmt, answer, ("favorite", "number"))
    with JFK.open("rb") as handle:
        detailed = client.audio.transcriptions.create(
            model="whisper-1",
            file=handle,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
        )
    assert detailed.language == "english" and detailed.duration == pytest.approx(11.0)
    assert detailed.words and detailed.words[0].word.strip().lower() == "and" and detailed.segments


def test_openai_errors_and_async_extension(live: httpx.Client) -> None:
    with JFK.open("rb") as handle:
        bad = live.post(
            "/v1/audio/transcriptions", files={"file": handle}, data={"model": "tiny.en", "response_format": "docx"}
        )
    assert bad.status_code == 422
    with JFK.open("rb") as handle:
        queued = live.post(
            "/v1/audio/transcriptions",
            files={"file": handle},
            data={"model": "tiny.en", "callback_url": "http://127.0.0.1:9/hook"},
        )
    assert queued.status_code == 202 and queued.json()["priority"] == "high"
    broken = live.post(
        "/v1/audio/transcriptions",
        data={"model": "tiny.en"},
        files={"file": ("broken.flac", b"fLaC" + bytes(range(256)) * 8)},
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "unsupported_media"
    task_id = queued.json()["id"]
    assert wait_for(lambda: live.get(f"/v1/tasks/{task_id}").json()["status"] == "completed")


def read_events(api: httpx.Client, task_id: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with api.stream("GET", f"/v1/tasks/{task_id}/events", timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def test_events_stream_status_progress_segments_and_the_final_state(live: httpx.Client) -> None:
    task_id = submit(live, LONG, word_timestamps="true").json()["id"]
    events = read_events(live, task_id)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and events[0][1] == {"status": "queued"}
    assert ("status", {"status": "processing"}) in events
    segments = [data for kind, data in events if kind == "segment"]
    assert len(segments) >= 5
    progress = [s["progress"] for s in segments]
    assert progress == sorted(progress) and progress[-1] > 0.9
    assert all(s["segment"]["words"] for s in segments)
    assert kinds[-2:] == ["status", "final"] and events[-2][1] == {"status": "completed"}
    final = events[-1][1]
    assert final["status"] == "completed" and final["result"]["text"].startswith(segments[0]["segment"]["text"].strip())
    again = read_events(live, task_id)
    assert [k for k, _ in again] == kinds, "a finished task replays its events and ends"


def test_cli_session_submit_with_progress_then_status_list_result(live: httpx.Client, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "whisperq"]
    url = ["--url", str(live.base_url)]
    out = tmp_path / "jfk.srt"
    done = subprocess.run(
        [*base, "submit", str(JFK), *url, "--format", "srt", "-o", str(out), "--priority", "high"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stderr and "[##############################]" in done.stderr
    task_id = done.stderr.split()[1]
    assert out.read_text().startswith("1\n00:00:00,000 --> ") and "ask not" in out.read_text()
    status = subprocess.run([*base, "status", task_id, *url], capture_output=True, text=True, timeout=60)
    assert f"id        {task_id}" in status.stdout and "status    completed" in status.stdout
    listing = subprocess.run([*base, "list", *url], capture_output=True, text=True, timeout=60)
    assert listing.stdout.startswith(task_id) and "completed" in listing.stdout
    vtt = subprocess.run(
        [*base, "result", task_id, "--format", "vtt", *url], capture_output=True, text=True, timeout=60
    )
    assert vtt.stdout.startswith("WEBVTT")
    missing = subprocess.run([*base, "status", "nope", *url], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "404 task_not_found" in missing.stderr


def test_metrics_parse_and_count_the_fleet(live: httpx.Client) -> None:
    task_id = submit(live, JFK).json()["id"]
    wait_for(lambda: live.get(f"/v1/tasks/{task_id}").json()["status"] == "completed")
    submit(live, JFK, model="base", priority="low", callback_url="http://127.0.0.1:9/hook")
    # The worker counts a completion just after it records it; a scrape a moment later finds it.
    response = wait_for(lambda: got if "processing_seconds_count" in (got := live.get("/metrics")).text else None)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("whisperq_tasks", (("status", "completed"),))] >= 1
    assert samples[("whisperq_workers", (("device", "cpu"), ("model", "tiny.en")))] == 1
    assert samples[("whisperq_processing_seconds_count", (("model", "tiny.en"),))] >= 1
    assert samples[("whisperq_real_time_factor_bucket", (("le", "+Inf"), ("model", "tiny.en")))] >= 1
    assert samples[("whisperq_upload_bytes_total", (("kind", "upload"),))] >= 2 * JFK.stat().st_size
    assert any(name == "whisperq_queue_length" for name, _ in samples)


def test_json_logs_carry_the_task_id(
    api: httpx.Client, served: Callable[[str], None], start_worker: StartWorker
) -> None:
    served("tiny.en")
    task_id = submit(api, JFK).json()["id"]
    errors = start_worker(log_format="json").finish()
    lines = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "task_id", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line["task_id"] == task_id]
    assert any("completed" in line["message"] for line in mine)


class ChatServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that 'summarises' by echoing the first words it was sent."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.requests.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
        words = " ".join(body["messages"][1]["content"].split()[:4])
        answer = {"choices": [{"message": {"role": "assistant", "content": f"Summary: {words}"}}]}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_summaries_through_an_openai_compatible_chat_endpoint(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
) -> None:
    served("tiny.en")
    plain = api_factory()
    task_id = submit(plain, JFK).json()["id"]
    assert plain.post(f"/v1/tasks/{task_id}/summary").json()["error"]["code"] == "summaries_unavailable"
    handler = type("Chat", (ChatServer,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        llm = api_factory(
            llm_base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", llm_model="tiny-llm", llm_api_key="sk-test"
        )
        early = llm.post(f"/v1/tasks/{task_id}/summary")
        assert early.status_code == 409
        assert start_worker().wait(timeout=120) == 0
        summary = llm.post(f"/v1/tasks/{task_id}/summary", json={"prompt": "One line, please."})
        assert summary.status_code == 200, summary.text
        assert summary.json()["summary"].startswith("Summary: And so") and summary.json()["model"] == "tiny-llm"
        sent = handler.requests[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
        assert sent["body"]["messages"][0]["content"] == "One line, please."
        assert "ask not what your country" in sent["body"]["messages"][1]["content"]
    finally:
        server.shutdown()
        server.server_close()

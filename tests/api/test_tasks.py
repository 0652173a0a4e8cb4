"""The ingress over real HTTP against a real Redis: validation, limits, the task as stored and queued."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq import Queue

from shared import keys
from shared.enums import Priority
from shared.settings import Settings
from tests.conftest import DATA, JFK, submit

WAV = DATA / "audio" / "fsdd" / "0_george_0.wav"


@pytest.fixture
def tiny(served: Callable[[str], None]) -> None:
    served("tiny.en")


def uploads(settings: Settings) -> list[str]:
    return sorted(os.listdir(settings.uploads)) if settings.uploads.exists() else []


def test_submit_answers_202_with_location_and_queues_the_job(
    api: httpx.Client, tiny: None, redis: Redis, settings: Settings
) -> None:
    response = submit(api, JFK, priority="high", beam_size=3, language="English")
    assert response.status_code == 202, response.text
    task = response.json()
    assert response.headers["location"].endswith(f"/v1/tasks/{task['id']}")
    assert task["status"] == "queued"
    assert task["queue_position"] == 1
    assert task["model"] == "tiny.en" and task["priority"] == "high"
    assert task["options"]["beam_size"] == 3 and task["options"]["language"] == "en"
    assert task["source"] == {
        "kind": "upload",
        "url": None,
        "platform": None,
        "title": None,
        "filename": "jfk.flac",
        "content_type": "audio/flac",
        "format": "flac",
        "size_bytes": JFK.stat().st_size,
    }
    assert task["created_at"].endswith("Z")
    queue = Queue(keys.queue_name("tiny.en", Priority.HIGH), connection=redis)
    assert queue.job_ids == [task["id"]]
    stored = uploads(settings)
    assert len(stored) == 1 and "jfk" not in stored[0]
    assert (settings.uploads / stored[0]).read_bytes() == JFK.read_bytes()


def test_queue_position_counts_jobs_ahead(api: httpx.Client, tiny: None) -> None:
    ids = [submit(api, WAV).json()["id"] for _ in range(3)]
    assert [api.get(f"/v1/tasks/{task_id}").json()["queue_position"] for task_id in ids] == [1, 2, 3]


def test_unknown_task_is_404(api: httpx.Client) -> None:
    for path in ("/v1/tasks/nope", "/v1/tasks/nope/result"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "task_not_found"


def test_result_is_409_until_completed(api: httpx.Client, tiny: None) -> None:
    task_id = submit(api, WAV).json()["id"]
    response = api.get(f"/v1/tasks/{task_id}/result", params={"format": "srt"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "task_not_completed"


def test_unknown_format_is_422(api: httpx.Client, tiny: None) -> None:
    task_id = submit(api, WAV).json()["id"]
    response = api.get(f"/v1/tasks/{task_id}/result", params={"format": "docx"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "format"


def test_unknown_model_is_422_listing_served_models(
    api: httpx.Client, served: Callable[[str], None], settings: Settings
) -> None:
    served("tiny.en")
    served("base")
    response = submit(api, WAV, model="large-v3")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "model_not_served"
    assert "'large-v3'" in error["message"] and "base, tiny.en" in error["message"]
    assert error["details"] == [{"field": "model", "served": ["base", "tiny.en"]}]
    assert uploads(settings) == []


def test_a_model_outside_the_deployment_is_422_even_with_no_worker(api: httpx.Client) -> None:
    response = submit(api, WAV, model="small")
    assert response.status_code == 422
    assert "no worker serves model 'small'" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"task_type": "summarize"}, "task_type"),
        ({"priority": "urgent"}, "priority"),
        ({"language": "klingon"}, "language"),
        ({"temperature": "0,1.5"}, "temperature"),
        ({"temperature": "[0.1, oops]"}, "temperature"),
        ({"beam_size": "0"}, "beam_size"),
        ({"beam_size": "five"}, "beam_size"),
        ({"best_of": "50"}, "best_of"),
        ({"patience": "-1"}, "patience"),
        ({"no_speech_threshold": "2"}, "no_speech_threshold"),
        ({"log_prob_threshold": "1"}, "log_prob_threshold"),
        ({"word_timestamps": "maybe"}, "word_timestamps"),
        ({"clip_timestamps": "10,5"}, "clip_timestamps"),
        ({"hallucination_silence_threshold": "2"}, "form"),
        ({"vad_filter": "true", "vad_parameters": '{"threshold": 3}'}, "vad_parameters.threshold"),
        ({"vad_filter": "true", "vad_parameters": '{"speed": 1}'}, "vad_parameters.speed"),
        ({"vad_parameters": '{"threshold": 0.4}'}, "form"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"beamsize": "3"}, "beamsize"),
    ],
)
def test_invalid_options_are_422_naming_the_field(
    api: httpx.Client, tiny: None, settings: Settings, fields: dict[str, str], field: str
) -> None:
    response = submit(api, WAV, **fields)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [detail["field"] for detail in error["details"]]
    assert uploads(settings) == []


def test_valid_options_are_stored(api: httpx.Client, tiny: None) -> None:
    fields = {
        "temperature": "0.2",
        "clip_timestamps": "0,5",
        "word_timestamps": "true",
        "hallucination_silence_threshold": "1.5",
        "vad_filter": "true",
        "vad_parameters": '{"min_silence_duration_ms": 500}',
        "initial_prompt": "JFK",
        "hotwords": "Americans",
        "condition_on_previous_text": "false",
        "log_prob_threshold": "-0.5",
        "callback_url": "http://127.0.0.1:9/cb",
    }
    task = submit(api, WAV, **fields).json()
    options = task["options"]
    assert options["temperature"] == [0.2] and options["clip_timestamps"] == [0.0, 5.0]
    assert options["vad_parameters"]["min_silence_duration_ms"] == 500
    assert options["condition_on_previous_text"] is False and options["hotwords"] == "Americans"
    assert task["callback_url"] == "http://127.0.0.1:9/cb"


def test_english_only_model_refuses_translation(api: httpx.Client, tiny: None, settings: Settings) -> None:
    for fields in ({"task_type": "translate"}, {"language": "es"}):
        response = submit(api, WAV, **fields)
        assert response.status_code == 422
        assert "English-only" in response.json()["error"]["message"]
    assert uploads(settings) == []


def test_missing_file_is_422(api: httpx.Client, tiny: None) -> None:
    response = api.post("/v1/tasks", data={"priority": "high"}, files={"other": ("", b"")})
    assert response.status_code == 422


def test_two_files_are_refused(api: httpx.Client, tiny: None, settings: Settings) -> None:
    payload = WAV.read_bytes()
    response = api.post("/v1/tasks", files=[("file", ("a.wav", payload)), ("file", ("b.wav", payload))])
    assert response.status_code == 422
    assert uploads(settings) == []


def test_oversize_upload_is_413_and_leaves_nothing(
    api_factory: Callable[..., httpx.Client], tiny: None, settings: Settings
) -> None:
    api = api_factory(max_upload_bytes=100_000)
    response = submit(api, JFK)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert uploads(settings) == []


def _chunks(path: Path, boundary: str) -> Iterator[bytes]:
    yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n\r\n'.encode()
    with path.open("rb") as handle:
        while chunk := handle.read(16_384):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_oversize_upload_without_length_is_stopped_while_streaming(
    api_factory: Callable[..., httpx.Client], tiny: None, settings: Settings
) -> None:
    api = api_factory(max_upload_bytes=100_000)
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    response = api.post("/v1/tasks", content=_chunks(JFK, "xyz"), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert uploads(settings) == []


def test_streamed_upload_within_limit_is_accepted(api: httpx.Client, tiny: None) -> None:
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    response = api.post("/v1/tasks", content=_chunks(JFK, "xyz"), headers=headers)
    assert response.status_code == 202
    assert response.json()["source"]["size_bytes"] == JFK.stat().st_size


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("notes.txt", b"These are meeting notes, not a recording.\n" * 40),
        ("song.wav", os.urandom(4096)),
        ("empty.mp3", b""),
        ("page.mp4", b"<html><body>not a video</body></html>"),
    ],
)
def test_unsupported_media_is_415_and_leaves_nothing(
    api: httpx.Client, tiny: None, settings: Settings, name: str, payload: bytes
) -> None:
    response = api.post("/v1/tasks", files={"file": (name, payload, "audio/wav")})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media"
    assert uploads(settings) == []


def test_body_that_is_not_a_form_is_400(api: httpx.Client, tiny: None) -> None:
    response = api.post("/v1/tasks", json={"file": "jfk.flac"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"


def test_form_cut_off_before_its_end_is_400_and_leaves_nothing(
    api: httpx.Client, tiny: None, settings: Settings
) -> None:
    head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\n\r\n'
    body = head + JFK.read_bytes()[:50_000]
    response = api.post("/v1/tasks", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 400
    assert uploads(settings) == []


def test_health_lists_served_models(api: httpx.Client, served: Callable[[str], None]) -> None:
    served("base")
    body = api.get("/health").json()
    assert body["status"] == "ok" and body["models"] == ["base"]


def test_openapi_documents_the_form(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    form = spec["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "priority", "model", "beam_size", "vad_parameters"} <= set(form["properties"])


CJK = re.compile(r"[\u4e00-\u9fff]")


def _bilingual(text: str | None) -> bool:
    return bool(text) and bool(re.search(r"[A-Za-z]{3}", text or "")) and bool(CJK.search(text or ""))


def test_every_endpoint_and_parameter_is_described_in_english_and_chinese_with_an_example(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    operations = [(f"{method.upper()} {path}", op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 8
    for name, op in operations:
        assert _bilingual(op.get("description")), name
        for param in op.get("parameters", []):
            assert _bilingual(param.get("description")), f"{name} {param['name']}"
            assert "example" in param or param.get("examples") or param["schema"].get("examples"), f"{name} {param}"
        body = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
        for field, schema in (body or {}).get("schema", {}).get("properties", {}).items():
            assert _bilingual(schema.get("description")), f"{name} {field}"
            assert field == "file" or "example" in schema, f"{name} {field}"


def test_swagger_ui_is_served(api: httpx.Client) -> None:
    page = api.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text

"""A full upload volume or task database: uploads refused with 507 and nothing kept, whichever way they come."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from shared.settings import Settings
from shared.storage import PendingUpload, UploadStorage
from tests.api.test_socket_upload import refused, socket_url
from tests.conftest import JFK, submit

JFK_FILE = {"file": ("jfk.flac", JFK.read_bytes())}


def assert_full(response: httpx.Response) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "storage_full" and "no room" in error["message"], error


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every upload's file written to /dev/full, where the kernel answers each write with ENOSPC, as a full volume
    does; the upload's own file is still made on the volume, so what is left there shows."""
    receive = UploadStorage.receive

    def onto_a_full_disk(self: UploadStorage, max_bytes: int) -> PendingUpload:
        upload = receive(self, max_bytes)
        upload._file.close()
        upload._file = Path("/dev/full").open("wb")  # noqa: SIM115 (closed by the upload)
        return upload

    monkeypatch.setattr(UploadStorage, "receive", onto_a_full_disk)
    yield


def test_uploads_are_refused_while_the_volume_is_under_its_reserve(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], settings: Settings
) -> None:
    served("tiny.en")
    settings.uploads.mkdir(parents=True, exist_ok=True)
    reserve = shutil.disk_usage(settings.uploads).free + 2**30  # a GiB more than there is
    api = api_factory(volume_reserve_bytes=reserve)
    assert_full(submit(api, JFK, model="tiny.en"))
    assert_full(api.post("/v1/audio/transcriptions", files=JFK_FILE, data={"model": "tiny.en"}))
    assert_full(api.post("/v1/audio/extract", files=JFK_FILE))
    with (
        openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="not-needed", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as raised,
    ):
        client.audio.transcriptions.create(model="tiny.en", file=JFK)
    assert raised.value.status_code == 507
    error, code = refused(socket_url(api), JFK, {"model": "tiny.en"})
    assert (error["code"], code) == ("storage_full", 4507)
    assert api.get("/v1/tasks").json()["tasks"] == [], "no task was made"
    assert list(settings.uploads.iterdir()) == [], "nothing was kept on the volume"
    volume = api.get("/health").json()["upload_volume"]
    assert volume["reserve_bytes"] == reserve and 0 < volume["free_bytes"] < reserve
    metrics = api.get("/metrics").text.splitlines()
    gauges = dict(line.split(" ") for line in metrics if line.startswith("whisperq_upload_volume_"))
    assert float(gauges["whisperq_upload_volume_reserve_bytes"]) == reserve
    assert 0 < float(gauges["whisperq_upload_volume_free_bytes"]) < reserve
    open_api = api_factory(volume_reserve_bytes=0)
    assert submit(open_api, JFK, model="tiny.en").status_code == 202, "without the reserve, the same upload is taken"


@pytest.mark.usefixtures("full_disk")
def test_a_volume_that_fills_during_an_upload_answers_507_and_keeps_nothing(
    api: httpx.Client, served: Callable[[str], None], settings: Settings
) -> None:
    served("tiny.en")
    assert_full(submit(api, JFK, model="tiny.en"))
    assert_full(api.post("/v1/audio/transcriptions", files=JFK_FILE, data={"model": "tiny.en"}))
    error, code = refused(socket_url(api), JFK, {"model": "tiny.en"})
    assert (error["code"], code) == ("storage_full", 4507)
    assert api.get("/v1/tasks").json()["tasks"] == []
    assert list(settings.uploads.iterdir()) == [], "the partial files are gone"
    assert api.get("/health").status_code == 200, "the API goes on"


def test_a_task_database_out_of_memory_answers_507_and_keeps_nothing(
    api: httpx.Client, served: Callable[[str], None], settings: Settings, redis: Redis
) -> None:
    served("tiny.en")
    first = submit(api, JFK, model="tiny.en").json()["id"]
    redis.config_set("maxmemory", 1)  # over its memory: Redis refuses every write from here
    try:
        for answer in (submit(api, JFK, model="tiny.en"), submit(api, JFK, model="tiny.en", diarize="true")):
            assert answer.status_code == 507, answer.text
            assert answer.json()["error"]["code"] == "database_full"
        poll = api.get(f"/v1/tasks/{first}")
        assert poll.status_code == 200 and poll.json()["status"] == "queued", "status polls, which only read, go on"
    finally:
        redis.config_set("maxmemory", 0)
    assert len(list(settings.uploads.iterdir())) == 1, "only the first task's upload is on the volume"
    assert submit(api, JFK, model="tiny.en").status_code == 202, "and writes go on once Redis has room"


def test_an_unexpected_error_is_answered_in_the_error_body(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a fault the API does not know")

    monkeypatch.setattr("api.routes.health.fleet.live_workers", broken)
    response = api.get("/health")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "the server failed unexpectedly; the error is logged"}
    }

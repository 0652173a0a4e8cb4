"""Nothing lost: killed workers, graceful and cold stops, a Redis restart, back-pressure, time limits, bad input."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from redis import Redis
from rq.job import Job, JobStatus

from shared import fleet, keys
from shared.clock import utcnow
from shared.schemas import WorkerInfo
from shared.settings import Settings
from tests.conftest import DATA, JFK, ApiServer, StartWorker, submit, wait_for
from tests.worker.test_sources import Trickle, serve
from whisperq.redis_server import RedisServer
from worker.control import ColdStop
from worker.main import Worker

LONG = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
DIGIT = DATA / "audio" / "fsdd" / "5_yweweler_0.wav"


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


def running_on(api: httpx.Client, task_id: str) -> dict[str, Any]:
    """Wait until a worker has started transcribing the task."""
    return wait_for(lambda: (t := task(api, task_id))["status"] == "processing" and t["progress"] > 0 and t)  # type: ignore[no-any-return]


@pytest.fixture
def tiny(served: Callable[[str], None]) -> None:
    served("tiny.en")


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[str, Trickle]]:
    """The URL of a recording whose download trickles on until the test releases it, and its trickle."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(JFK, site / "jfk.flac")
    trickle = Trickle()
    with serve(site, trickle) as url:
        yield f"{url}/slow/jfk.flac", trickle


def submit_url(api: httpx.Client, url: str) -> str:
    response = api.post("/v1/tasks", data={"url": url})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


@pytest.mark.slow
def test_a_killed_workers_task_is_completed_by_another(
    api: httpx.Client, tiny: None, start_worker: StartWorker
) -> None:
    task_id = submit(api, LONG).json()["id"]
    doomed = start_worker(burst=False, worker_ttl_s=5)
    first = running_on(api, task_id)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = start_worker(burst=False, worker_ttl_s=5)

    done = wait_for(lambda: (t := task(api, task_id))["status"] == "completed" and t, timeout_s=240)
    assert done["attempts"] == 2 and done["worker"] != first["worker"]
    assert "printing" in done["result"]["text"].lower()
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0


@pytest.mark.slow
def test_a_task_whose_workers_keep_dying_fails_with_worker_lost(
    api: httpx.Client, tiny: None, start_worker: StartWorker, settings: Settings
) -> None:
    task_id = submit(api, LONG).json()["id"]
    doomed = start_worker(burst=False, worker_ttl_s=5, max_attempts=1)
    running_on(api, task_id)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    start_worker(burst=False, worker_ttl_s=5, max_attempts=1)
    failed = wait_for(lambda: (t := task(api, task_id))["status"] == "failed" and t, timeout_s=60)
    assert failed["error"]["code"] == "worker_lost" and failed["attempts"] == 1
    # The janitor marks the task failed, then removes its media: wait for the removal, not for the mark alone.
    wait_for(lambda: list(settings.uploads.iterdir()) == [], timeout_s=30)


@pytest.mark.slow
def test_a_long_job_is_never_taken_for_abandoned(
    api: httpx.Client, tiny: None, start_worker: StartWorker, redis: Redis, held: tuple[str, Trickle]
) -> None:
    url, trickle = held
    task_id = submit_url(api, url)
    busy = start_worker(burst=False, worker_ttl_s=5)
    assert trickle.begun.wait(120), "the job has begun: its download is held until released"
    watcher = start_worker(burst=False, worker_ttl_s=5)  # its janitor sweeps every two seconds meanwhile
    wait_for(lambda: {busy.pid, watcher.pid} <= {w.pid for w in fleet.live_workers(redis)}, timeout_s=120)
    time.sleep(3 * 5)  # the job outlives the worker TTL three times over while both janitors sweep: how long it takes
    assert task(api, task_id)["attempts"] == 1, "nobody took the job for abandoned"
    trickle.released.set()
    done = wait_for(lambda: (t := task(api, task_id))["status"] == "completed" and t, timeout_s=120)
    assert done["attempts"] == 1 and "ask not what your country" in done["result"]["text"]
    # RQ records the job finished once the job function has returned, a moment after it completed the task.
    wait_for(lambda: Job.fetch(task_id, connection=redis).get_status() == JobStatus.FINISHED, timeout_s=30)
    for worker in (busy, watcher):
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


@pytest.mark.slow
def test_first_sigterm_finishes_the_job_then_exits(api: httpx.Client, tiny: None, start_worker: StartWorker) -> None:
    task_id = submit(api, LONG).json()["id"]
    waiting = submit(api, DIGIT).json()["id"]
    worker = start_worker(burst=False, replicas=1)  # one copy of the model: the second task stays queued
    running_on(api, task_id)
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: task(api, task_id)["status"] == "completed", timeout_s=600)  # the job in hand is finished
    assert worker.wait(timeout=60) == 0
    assert task(api, waiting)["status"] == "queued", "it stops after the job in hand"


@pytest.mark.slow
def test_second_sigterm_hands_the_job_back_at_once(
    api: httpx.Client, tiny: None, start_worker: StartWorker, settings: Settings, redis: Redis
) -> None:
    task_id = submit(api, LONG).json()["id"]
    worker = start_worker(burst=False)
    running_on(api, task_id)
    worker.send_signal(signal.SIGTERM)
    worker.log.wait_for("warm shut down requested")  # two signals sent at once could arrive as one
    worker.send_signal(signal.SIGTERM)
    worker.finish()
    handed_back = task(api, task_id)  # not completed: the job was not finished first
    assert handed_back["status"] == "queued" and handed_back["result"] is None and handed_back["queue_position"] == 1
    assert len(list(settings.uploads.iterdir())) == 1, "the media stays for the next attempt"
    assert not redis.exists(keys.result_key(task_id))

    assert start_worker().wait(timeout=120) == 0
    done = task(api, task_id)
    assert done["status"] == "completed" and done["attempts"] == 2


def test_a_second_signal_inside_the_first_ones_handler_still_stops_the_worker(redis: Redis) -> None:
    """The race the test above can meet: the second SIGTERM lands while RQ's first handler is still logging, so
    the cold stop cuts that handler short before it marks the stop requested."""
    worker = Worker(["whisperq:tiny.en:normal"], connection=redis, name="race")
    worker.get_current_job_id = lambda: "held"  # type: ignore[method-assign]
    worker.handle_warm_shutdown_request = lambda: worker.request_force_stop(signal.SIGTERM, None)  # type: ignore[method-assign]
    with pytest.raises(ColdStop):
        worker.request_stop(signal.SIGTERM, None)  # type: ignore[no-untyped-call]
    assert worker.interrupted == ["held"]
    assert worker._stop_requested, "RQ's loop would take the next job instead of stopping"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_redis_restart_loses_nothing_and_everyone_recovers(
    own_redis: RedisServer, settings: Settings, start_worker: StartWorker
) -> None:
    settings = settings.model_copy(update={"redis_url": own_redis.url})
    survivor = start_worker(burst=False, redis_url=own_redis.url)
    with ApiServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as api:
        wait_for(lambda: api.get("/health").json()["models"] == ["tiny.en"])
        done_id = submit(api, JFK).json()["id"]
        wait_for(lambda: task(api, done_id)["status"] == "completed")
        info = WorkerInfo(
            id="base-later",
            model="base",
            device="cpu",
            compute_type="int8",
            multilingual=True,
            host="test",
            pid=1,
            started_at=utcnow(),
        )
        fleet.announce(Redis.from_url(own_redis.url), info, ttl_s=600)  # a base worker comes after the restart
        queued_id = submit(api, JFK, model="base", language="en").json()["id"]
        before = task(api, done_id)

        own_redis.stop()
        down = api.get(f"/v1/tasks/{done_id}")
        assert down.status_code == 503
        assert down.json() == {
            "error": {"code": "service_unavailable", "message": "the task database is unreachable; try again shortly"}
        }
        assert submit(api, DIGIT).status_code == 503
        time.sleep(2)
        own_redis.start()

        assert task(api, done_id) == before, "the completed task and its result survived"
        kept = task(api, queued_id)
        assert kept["status"] == "queued" and kept["queue_position"] == 1, "the queued job survived"
        after_id = submit(api, DIGIT).json()["id"]
        assert wait_for(lambda: task(api, after_id)["status"] == "completed", timeout_s=90)
        assert survivor.poll() is None, "the worker reconnected instead of dying"
        assert start_worker("base", redis_url=own_redis.url).wait(timeout=120) == 0
        assert "ask not what your country" in task(api, queued_id)["result"]["text"]
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=30) == 0


def test_back_pressure_answers_429_and_writes_nothing(
    api_factory: Callable[..., httpx.Client], tiny: None, settings: Settings, redis: Redis
) -> None:
    api = api_factory(max_queued_tasks=2, retry_after_s=17)
    assert [submit(api, DIGIT).status_code for _ in range(2)] == [202, 202]
    keys_before = sorted(redis.keys("*"))
    refused = submit(api, DIGIT)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "17"
    assert refused.json()["error"]["code"] == "too_many_tasks"
    assert sorted(redis.keys("*")) == keys_before
    assert len(list(settings.uploads.iterdir())) == 2
    assert api.get("/v1/tasks").json()["total"] == 2


def test_back_pressure_per_priority(api_factory: Callable[..., httpx.Client], tiny: None, settings: Settings) -> None:
    api = api_factory(max_queued_per_priority={"low": 1})
    assert submit(api, DIGIT, priority="low").status_code == 202
    refused = submit(api, DIGIT, priority="low")
    assert refused.status_code == 429 and "low-priority" in refused.json()["error"]["message"]
    assert submit(api, DIGIT, priority="high").status_code == 202
    assert len(list(settings.uploads.iterdir())) == 2


def test_time_limit_scales_with_the_audio() -> None:
    settings = Settings(_env_file=None, job_timeout_base_s=60, job_timeout_factor=2)  # type: ignore[call-arg]
    assert settings.job_timeout(0) == 60 and settings.job_timeout(1200) == 2460


@pytest.mark.slow
def test_a_job_past_its_time_limit_fails_and_the_worker_goes_on(
    api: httpx.Client, tiny: None, start_worker: StartWorker, held: tuple[str, Trickle]
) -> None:
    url, _ = held
    slow = submit_url(api, url)  # its download is held: it runs past any limit, on any hardware
    quick = submit(api, JFK).json()["id"]
    # 10 s + 1 s per audio second: a download may take that for the longest media allowed (12 s), so 22 s;
    # JFK (11 s) gets 21 s and needs about 1.
    limits = {"job_timeout_base_s": 10, "job_timeout_factor": 1, "max_media_duration_s": 12}
    assert start_worker(**limits).wait(timeout=240) == 0
    timed_out = task(api, slow)
    assert timed_out["status"] == "failed" and timed_out["error"]["code"] == "timeout"
    assert "22-second time limit" in timed_out["error"]["message"]
    assert task(api, quick)["status"] == "completed"


def wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    """A 16-bit mono WAV header announcing `data_bytes` of samples."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def mp3_of(source: Path, target: Path) -> None:
    with av.open(str(source)) as inp, av.open(str(target), "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=16000)
        for frame in inp.decode(audio=0):
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.mark.slow
def test_bad_media_accepted_by_the_api_fails_or_is_bounded_and_the_worker_goes_on(
    api: httpx.Client, tiny: None, start_worker: StartWorker, tmp_path: Path, settings: Settings
) -> None:
    full = tmp_path / "jfk.mp3"
    mp3_of(JFK, full)
    truncated = tmp_path / "truncated.mp3"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    one_second = DIGIT.read_bytes()[44:][:16000]
    liar = tmp_path / "ten-hours.wav"
    liar.write_bytes(wav_header(10 * 3600 * 16000 * 2) + one_second)
    empty = tmp_path / "zero-length.wav"
    empty.write_bytes(wav_header(0))
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + bytes(range(256)) * 40)

    ids = {
        name: submit(api, path).json()["id"]
        for name, path in {
            "truncated": truncated,
            "liar": liar,
            "empty": empty,
            "garbage": garbage,
            "real": JFK,
        }.items()
    }
    assert start_worker().wait(timeout=120) == 0
    result = {name: task(api, task_id) for name, task_id in ids.items()}

    assert result["empty"]["error"]["code"] == "unsupported_media", result["empty"]["error"]
    assert "no audio samples" in result["empty"]["error"]["message"]
    assert result["garbage"]["error"]["code"] == "unsupported_media"
    # A cut-off MP3 is transcribed as far as it goes; a header that claims ten hours yields only what is there.
    assert result["truncated"]["status"] == "completed" and result["truncated"]["duration"] < 7
    assert re.sub(r"[^\w ]", "", result["truncated"]["result"]["text"].lower()).startswith("and so my fellow americans")
    assert result["liar"]["status"] == "completed" and result["liar"]["duration"] < 2
    assert result["real"]["status"] == "completed" and "ask not what your country" in result["real"]["result"]["text"]
    assert all("Traceback" not in str(t["error"]) for t in result.values())
    assert list(settings.uploads.iterdir()) == []


def test_an_upload_cut_off_midway_leaves_no_task_and_no_file(api: httpx.Client, tiny: None, settings: Settings) -> None:
    host, port = api.base_url.host, api.base_url.port
    head = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\n\r\n'
        + JFK.read_bytes()[:300_000]
    )
    request = (
        f"POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {len(head) + 900_000}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as connection:
        connection.sendall(request + head)
        wait_for(lambda: list(settings.uploads.glob("*.part")), timeout_s=10)
    wait_for(lambda: list(settings.uploads.iterdir()) == [], timeout_s=10)
    assert api.get("/v1/tasks").json()["total"] == 0


def test_a_broken_multipart_body_is_400(api: httpx.Client, tiny: None, settings: Settings) -> None:
    response = api.post(
        "/v1/tasks",
        content=b"--xyz\r\nnot a header line\r\n\r\nbody",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "malformed_request"
    assert list(settings.uploads.iterdir()) == []

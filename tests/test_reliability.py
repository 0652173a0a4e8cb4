"""Nothing lost: killed workers, graceful and cold stops, a Redis restart, back-pressure, time limits, bad input."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from rq.job import Job, JobStatus

from shared import fleet, keys
from shared.redis_server import RedisServer
from shared.schemas import WorkerInfo
from shared.settings import Settings
from shared.store import utcnow
from tests.conftest import DATA, JFK, ApiServer, submit, wait_for

StartWorker = Callable[..., subprocess.Popen[str]]
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


@pytest.mark.slow
def test_a_killed_workers_task_is_completed_by_another(
    api: httpx.Client, tiny: None, start_worker: StartWorker
) -> None:
    task_id = submit(api, LONG).json()["id"]
    doomed = start_worker(burst=False, worker_ttl_s=5)
    first = running_on(api, task_id)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    killed_at = time.monotonic()
    rescuer = start_worker(burst=False, worker_ttl_s=5)

    done = wait_for(lambda: (t := task(api, task_id))["status"] == "completed" and t, timeout_s=120)
    assert done["attempts"] == 2 and done["worker"] != first["worker"]
    assert "printing" in done["result"]["text"].lower()
    assert time.monotonic() - killed_at < 60 + done["processing_seconds"]
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
    assert list(settings.uploads.iterdir()) == []


@pytest.mark.slow
def test_a_long_job_is_never_taken_for_abandoned(
    api: httpx.Client, tiny: None, start_worker: StartWorker, redis: Redis
) -> None:
    task_id = submit(api, LONG).json()["id"]
    busy = start_worker(burst=False, worker_ttl_s=5)
    running_on(api, task_id)
    watcher = start_worker(burst=False, worker_ttl_s=5)  # its janitor sweeps every two seconds meanwhile
    done = wait_for(lambda: (t := task(api, task_id))["status"] == "completed" and t, timeout_s=120)
    assert done["processing_seconds"] > 2 * 5, "the job outlived the worker TTL several times over"
    assert done["attempts"] == 1
    assert Job.fetch(task_id, connection=redis).get_status() == JobStatus.FINISHED
    for worker in (busy, watcher):
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


@pytest.mark.slow
def test_first_sigterm_finishes_the_job_then_exits(api: httpx.Client, tiny: None, start_worker: StartWorker) -> None:
    task_id = submit(api, LONG).json()["id"]
    waiting = submit(api, DIGIT).json()["id"]
    worker = start_worker(burst=False)
    running_on(api, task_id)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0
    assert task(api, task_id)["status"] == "completed"
    assert task(api, waiting)["status"] == "queued", "it stops after the job in hand"


@pytest.mark.slow
def test_second_sigterm_hands_the_job_back_at_once(
    api: httpx.Client, tiny: None, start_worker: StartWorker, settings: Settings, redis: Redis
) -> None:
    task_id = submit(api, LONG).json()["id"]
    worker = start_worker(burst=False)
    running_on(api, task_id)
    worker.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    worker.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    worker.wait(timeout=30)
    assert time.monotonic() - stopped < 5
    handed_back = task(api, task_id)
    assert handed_back["status"] == "queued" and handed_back["result"] is None and handed_back["queue_position"] == 1
    assert len(list(settings.uploads.iterdir())) == 1, "the media stays for the next attempt"
    assert not redis.exists(keys.result_key(task_id))

    assert start_worker().wait(timeout=120) == 0
    done = task(api, task_id)
    assert done["status"] == "completed" and done["attempts"] == 2


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
            id="base-later", model="base", device="cpu", compute_type="int8", host="test", pid=1, started_at=utcnow()
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

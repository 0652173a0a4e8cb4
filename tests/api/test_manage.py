"""Managing tasks: listing with filters and pages, delete, cancel and retention, on a real Redis and real workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis import Redis
from rq import Queue

from shared import keys
from shared.enums import Priority
from shared.settings import Settings
from tests.conftest import DATA, JFK, StartWorker, submit, wait_for

WAV = DATA / "audio" / "fsdd" / "3_theo_0.wav"
LONG = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"


@pytest.fixture
def models(served: Callable[[str], None]) -> None:
    served("tiny.en")
    served("base")


def index_members(redis: Redis) -> dict[str, set[str]]:
    """Every index and listing set, with its members (a test may scan; the service never does)."""
    found = {}
    for key in redis.scan_iter(match=f"{keys.PREFIX}:*"):
        if redis.type(key) == b"zset":
            found[key.decode()] = {member.decode() for member in redis.zrange(key, 0, -1)}
    return found


def listing(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/v1/tasks", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [task["id"] for task in page["tasks"]]


def test_listing_filters_pages_and_orders_newest_first(api: httpx.Client, models: None) -> None:
    specs = [
        {"priority": "high"},
        {"priority": "low", "language": "en"},
        {"model": "base", "task_type": "translate", "language": "es"},
        {"model": "base", "language": "Spanish"},
        {"priority": "high", "model": "base"},
    ]
    created = [submit(api, WAV, **spec).json()["id"] for spec in specs]
    newest_first = created[::-1]

    everything = listing(api)
    assert ids(everything) == newest_first and everything["total"] == 5 and everything["next"] is None
    assert "result" in everything["tasks"][0] and everything["tasks"][0]["result"] is None

    assert ids(listing(api, priority="high")) == [created[4], created[0]]
    assert ids(listing(api, model="base")) == [created[4], created[3], created[2]]
    assert ids(listing(api, model="base", language="es")) == [created[3], created[2]]
    assert ids(listing(api, task_type="translate")) == [created[2]]
    assert ids(listing(api, language="english")) == [created[1]]
    assert listing(api, model="base", priority="low")["total"] == 0

    first = listing(api, limit=2)
    assert ids(first) == newest_first[:2] and first["total"] == 5
    second = httpx.get(first["next"]).json()
    assert ids(second) == newest_first[2:4] and second["offset"] == 2
    third = httpx.get(second["next"]).json()
    assert ids(third) == newest_first[4:] and third["next"] is None

    middle = api.get(f"/v1/tasks/{created[2]}").json()["created_at"]
    assert ids(listing(api, created_after=middle)) == newest_first[:2]
    assert ids(listing(api, created_before=middle)) == newest_first[3:]
    assert ids(listing(api, model="base", created_before=middle)) == []


def test_listing_follows_status_changes(api: httpx.Client, models: None) -> None:
    first, second = (submit(api, WAV).json()["id"] for _ in range(2))
    assert api.post(f"/v1/tasks/{first}/cancel").status_code == 200
    assert ids(listing(api, status="cancelled")) == [first]
    assert ids(listing(api, status="queued")) == [second]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
        {"status": "done"},
        {"language": "elvish"},
        {"offset": str(10**19)},
        {"created_after": "yesterday"},
        {"created_after": "2026-01-01T00:00:00"},
        {"sort": "oldest"},
    ],
)
def test_listing_rejects_bad_parameters(api: httpx.Client, params: dict[str, Any]) -> None:
    response = api.get("/v1/tasks", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_delete_removes_a_queued_task_everywhere(
    api: httpx.Client, models: None, redis: Redis, settings: Settings
) -> None:
    keep = submit(api, WAV, priority="high").json()["id"]
    gone = submit(api, WAV, priority="high").json()["id"]
    queue = Queue(keys.queue_name("tiny.en", Priority.HIGH), connection=redis)
    assert queue.job_ids == [keep, gone] and len(list(settings.uploads.iterdir())) == 2

    assert api.delete(f"/v1/tasks/{gone}").status_code == 204
    assert queue.job_ids == [keep]
    assert len(list(settings.uploads.iterdir())) == 1
    for path in (f"/v1/tasks/{gone}", f"/v1/tasks/{gone}/result"):
        assert api.get(path).status_code == 404
    assert api.post(f"/v1/tasks/{gone}/cancel").status_code == 404
    assert api.delete(f"/v1/tasks/{gone}").status_code == 404
    assert all(gone not in members for members in index_members(redis).values())
    assert ids(listing(api)) == [keep]
    assert not redis.exists(f"rq:job:{gone}")


def test_delete_removes_a_completed_task_and_its_result(
    api: httpx.Client, models: None, redis: Redis, run_worker: Callable[[str], object]
) -> None:
    task_id = submit(api, WAV).json()["id"]
    run_worker("tiny.en")
    assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "completed"
    assert redis.exists(keys.result_key(task_id))

    assert api.delete(f"/v1/tasks/{task_id}").status_code == 204
    assert not redis.exists(keys.result_key(task_id)) and not redis.exists(keys.task_key(task_id))
    assert api.get(f"/v1/tasks/{task_id}/result").status_code == 404
    assert listing(api, status="completed")["total"] == 0


def test_cancel_a_queued_task(api: httpx.Client, models: None, redis: Redis, settings: Settings) -> None:
    task_id = submit(api, WAV, priority="low").json()["id"]
    cancelled = api.post(f"/v1/tasks/{task_id}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["finished_at"] and body["queue_position"] is None
    assert Queue(keys.queue_name("tiny.en", Priority.LOW), connection=redis).job_ids == []
    assert list(settings.uploads.iterdir()) == []
    again = api.post(f"/v1/tasks/{task_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_finished"
    assert api.get(f"/v1/tasks/{task_id}/result").status_code == 409


def wait_until_running(api: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (task := api.get(f"/v1/tasks/{task_id}").json())["progress"] == 0:
        assert time.monotonic() < deadline and task["status"] in ("queued", "processing"), task
        time.sleep(0.05)
    assert task["status"] == "processing"
    return task


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_a_running_task_is_stopped_and_the_worker_goes_on(
    api: httpx.Client,
    models: None,
    settings: Settings,
    start_worker: StartWorker,
    how: str,
) -> None:
    long_task = submit(api, LONG, priority="high").json()["id"]
    next_task = submit(api, JFK, priority="low").json()["id"]
    worker = start_worker()
    wait_until_running(api, long_task)

    if how == "cancel":
        assert api.post(f"/v1/tasks/{long_task}/cancel").json()["status"] == "cancelled"
    else:
        assert api.delete(f"/v1/tasks/{long_task}").status_code == 204
    errors = worker.finish()
    assert worker.returncode == 0, errors

    after = api.get(f"/v1/tasks/{long_task}")
    if how == "cancel":
        body = after.json()
        assert body["status"] == "cancelled" and body["result"] is None and body["progress"] < 1
    else:
        assert after.status_code == 404
    done = api.get(f"/v1/tasks/{next_task}").json()
    assert done["status"] == "completed" and "ask not" in done["result"]["text"]
    # Stopped between two segments, not after the last: the engine's run ended with the task's.
    assert f"task {long_task} was cancelled" in errors
    assert list(settings.uploads.iterdir()) == []


def test_tasks_expire_after_the_retention_time(
    api_factory: Callable[..., httpx.Client], models: None, redis: Redis
) -> None:
    api = api_factory(task_ttl_s=1)
    task_id = submit(api, WAV).json()["id"]
    assert ids(listing(api)) == [task_id]
    assert 0 < redis.ttl(keys.task_key(task_id)) <= 1
    wait_for(lambda: api.get(f"/v1/tasks/{task_id}").status_code == 404, timeout_s=30)
    page = listing(api)
    assert page["tasks"] == [] and page["total"] == 0
    assert listing(api, status="queued")["total"] == 0
    assert task_id not in index_members(redis).get(keys.all_tasks_key(), set())

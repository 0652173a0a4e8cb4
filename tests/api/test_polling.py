"""Status polls over real HTTP against a real Redis: ETags and 304, the status view, and long polls.

A task's state is moved by the task store (as a worker moves it), or by a real worker with the tiny.en model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest
from redis import Redis

from shared.enums import TaskStatus, TaskType
from shared.schemas import Task, Transcript
from shared.settings import Settings
from shared.store import run_fence
from shared.stores import Stores
from tests.conftest import JFK, StartWorker, make_segment, queued_task, submit, wait_for


@pytest.fixture
def stores(redis: Redis, settings: Settings) -> Stores:
    return Stores.open(redis, settings)


@pytest.fixture
def task(redis: Redis, stores: Stores) -> Task:
    return queued_task(redis, stores)


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def transcript() -> Transcript:
    segment = make_segment(0, 0.0, 11.0, " And so, my fellow Americans.")
    return Transcript(
        task=TaskType.TRANSCRIBE,
        language="en",
        language_probability=0.99,
        duration=11.0,
        text=segment.text,
        segments=[segment],
    )


def complete(stores: Stores, task: Task) -> Transcript:
    """Run the task to completion through the store, as a worker would; the transcript it stored."""
    stores.tasks.start(task, "worker-1", TaskStatus.PROCESSING)
    done = transcript()
    assert stores.tasks.complete(task.id, done, 1.5)
    return done


def poll(api: httpx.Client, task_id: str, etag: str | None = None, **params: str | float) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag else {}
    return api.get(f"/v1/tasks/{task_id}", params=params, headers=headers)


def long_poll(
    background: ThreadPoolExecutor, api: httpx.Client, redis: Redis, task_id: str, etag: str, wait_s: float
) -> tuple[Future[httpx.Response], float]:
    """Start a long poll in a thread; return once the API waits on the task's events (a blocked XREAD in Redis)."""
    started = time.monotonic()
    answer = background.submit(poll, api, task_id, etag, view="status", wait=wait_s)
    wait_for(lambda: answer.done() or any(client["cmd"] == "xread" for client in redis.client_list()), 10)
    assert not answer.done(), f"answered at once: {answer.result().status_code}"
    return answer, started


def test_an_unchanged_task_answers_304_with_its_etag(api: httpx.Client, task: Task) -> None:
    first = poll(api, task.id)
    assert first.status_code == 200 and first.json()["status"] == "queued"
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    assert first.headers["cache-control"] == "no-cache"
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = poll(api, task.id, sent)
        assert again.status_code == 304, sent
        assert again.content == b"" and again.headers["etag"] == etag
    assert poll(api, task.id, '"other"').status_code == 200


def test_the_etag_changes_when_the_status_does(api: httpx.Client, task: Task, stores: Stores) -> None:
    etag = poll(api, task.id).headers["etag"]
    stores.tasks.start(task, "worker-1", TaskStatus.PROCESSING)
    changed = poll(api, task.id, etag)
    assert changed.status_code == 200 and changed.json()["status"] == "processing"
    assert changed.headers["etag"] != etag
    assert poll(api, task.id, changed.headers["etag"]).status_code == 304


def test_the_status_view_leaves_out_the_result_which_has_its_own_route(
    api: httpx.Client, task: Task, stores: Stores
) -> None:
    stored = complete(stores, task)
    full = poll(api, task.id)
    status = poll(api, task.id, view="status")
    assert full.status_code == status.status_code == 200
    assert Transcript.model_validate(full.json()["result"]) == stored
    assert status.json()["result"] is None
    assert status.json()["result_formats"] == full.json()["result_formats"] == [
        "json", "text", "srt", "vtt", "tsv", "verbose_json"
    ]  # fmt: skip
    assert {**full.json(), "result": None} == status.json()
    assert full.headers["etag"] != status.headers["etag"]
    assert poll(api, task.id, full.headers["etag"], view="status").status_code == 200
    result = api.get(f"/v1/tasks/{task.id}/result", params={"format": "json"})
    assert result.status_code == 200 and result.json()["text"] == stored.text


def test_a_long_poll_answers_as_soon_as_the_task_changes(
    api: httpx.Client, task: Task, redis: Redis, stores: Stores, background: ThreadPoolExecutor
) -> None:
    etag = poll(api, task.id, view="status").headers["etag"]
    answer, started = long_poll(background, api, redis, task.id, etag, 30)
    stores.tasks.start(task, "worker-1", TaskStatus.PROCESSING)
    response = answer.result(timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "processing"
    assert response.headers["etag"] != etag
    assert time.monotonic() - started < 10


def test_a_long_poll_answers_on_progress(
    api: httpx.Client, task: Task, redis: Redis, stores: Stores, background: ThreadPoolExecutor
) -> None:
    run = stores.tasks.start(task, "worker-1", TaskStatus.PROCESSING)
    etag = poll(api, task.id, view="status").headers["etag"]
    answer, _ = long_poll(background, api, redis, task.id, etag, 30)
    fences = [run_fence(task.id, run)]
    assert stores.tasks.update(task.id, fences, progress=0.5)  # as a worker reports a decoded segment
    assert stores.events.add(task.id, {"type": "segment", "progress": "0.5", "segment": "{}"}, fences)
    response = answer.result(timeout=10)
    assert response.status_code == 200 and response.json()["progress"] == 0.5


def test_a_long_poll_follows_a_real_worker(
    api: httpx.Client,
    served: Callable[[str], None],
    redis: Redis,
    start_worker: StartWorker,
    background: ThreadPoolExecutor,
) -> None:
    served("tiny.en")
    task_id = submit(api, JFK).json()["id"]
    etag = poll(api, task_id, view="status").headers["etag"]
    answer, started = long_poll(background, api, redis, task_id, etag, 60)
    worker = start_worker("tiny.en")
    response = answer.result(timeout=60)
    assert response.status_code == 200 and response.json()["status"] != "queued"
    assert time.monotonic() - started < 60
    worker.finish()
    final = poll(api, task_id)
    assert final.json()["status"] == "completed" and "Americans" in final.json()["result"]["text"]


def test_a_long_poll_answers_304_at_its_timeout(api: httpx.Client, task: Task) -> None:
    etag = poll(api, task.id, view="status").headers["etag"]
    started = time.monotonic()
    response = poll(api, task.id, etag, view="status", wait=1)
    assert response.status_code == 304 and response.headers["etag"] == etag
    assert 1 <= time.monotonic() - started < 10


def test_wait_without_an_etag_answers_at_once(api: httpx.Client, task: Task) -> None:
    started = time.monotonic()
    assert poll(api, task.id, wait=30).status_code == 200
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("params", [{"wait": 61}, {"wait": -1}, {"wait": "soon"}, {"view": "everything"}])
def test_out_of_range_wait_and_unknown_view_are_422(
    api: httpx.Client, task: Task, params: dict[str, str | float]
) -> None:
    response = api.get(f"/v1/tasks/{task.id}", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] in params

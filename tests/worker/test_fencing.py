"""Fencing: every run of a task carries a token, and a worker's writes count only while its run holds the task.

A janitor puts a lost run back once; a task running on one worker is not started by another; a worker taken for
dead that carries on writes nothing over the newer run; a Redis outage is no evidence that workers died.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from rq import Queue, Worker

from shared import fleet, keys, queues
from shared.chunks import chunk_fence
from shared.clock import utcnow
from shared.enums import Priority, TaskStatus, TaskType
from shared.lifecycle import Lifecycle
from shared.schemas import Chunk, Transcript, WorkerInfo
from shared.settings import Settings
from shared.store import run_fence
from shared.stores import Stores
from tests.conftest import DATA, make_segment, queued_task, submit, wait_for
from whisperq.redis_server import RedisServer
from worker.recovery import Janitor

StartWorker = Callable[..., subprocess.Popen[str]]
LONG = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
TTL_S = 5


@pytest.fixture
def quick(settings: Settings, redis: Redis) -> Settings:
    """Settings with the shortest worker TTL, once Redis has been up that long (a fresh Redis means a restart)."""
    wait_for(lambda: int(redis.info("server")["uptime_in_seconds"]) >= TTL_S, timeout_s=TTL_S + 2)
    return settings.model_copy(update={"worker_ttl_s": TTL_S})


def normal_queue(redis: Redis) -> Queue:
    return Queue(keys.queue_name("tiny.en", Priority.NORMAL), connection=redis)


def announce(redis: Redis, worker_id: str, ttl_s: int = 60, holding: str | None = None) -> None:
    """Announce a worker (holding a job, if given) as its upkeep would."""
    info = WorkerInfo(
        id=worker_id,
        model="tiny.en",
        device="cpu",
        compute_type="int8",
        multilingual=False,
        host="test",
        pid=1,
        started_at=utcnow(),
    )
    fleet.announce(redis, info, ttl_s=ttl_s, holding=holding)


def test_two_janitors_put_a_lost_task_back_once(redis: Redis, quick: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    stores, stale_view = Stores.open(redis, quick), Stores.open(redis, quick)
    task = queued_task(redis, stores)
    queue = normal_queue(redis)
    redis.lpop(queue.key)  # a worker takes the job, starts the task and dies (it never announced itself)
    assert stores.tasks.start(task, "gone", TaskStatus.PROCESSING)
    first = Janitor(redis, Lifecycle(redis, stores, keep_uploads=False), quick)
    second = Janitor(redis, Lifecycle(redis, stale_view, keep_uploads=False), quick)
    seen = stale_view.tasks.running()
    monkeypatch.setattr(stale_view.tasks, "running", lambda: seen)  # the second read the task before the first acted

    assert first.sweep() == [task.id]
    assert queue.job_ids == [task.id]
    redis.lpop(queue.key)  # a new worker takes the job, and has not started the task yet
    assert second.sweep() == [], "the task was put back already"
    assert queue.job_ids == [], "its job is on no queue twice"
    assert stores.tasks.get(task.id).attempts == 1


def test_a_task_running_on_one_worker_is_not_started_by_another(redis: Redis, quick: Settings) -> None:
    stores = Stores.open(redis, quick)
    task = queued_task(redis, stores)
    assert stores.tasks.start(task, "first", TaskStatus.PROCESSING)
    assert not stores.tasks.start(task, "second", TaskStatus.PROCESSING)
    running = stores.tasks.get(task.id)
    assert running.worker == "first" and running.attempts == 1


def test_the_writes_of_a_run_taken_back_are_refused(redis: Redis, quick: Settings) -> None:
    stores = Stores.open(redis, quick)
    lifecycle = Lifecycle(redis, stores, keep_uploads=False)
    task = queued_task(redis, stores)
    assert task.upload_name is not None
    old = stores.tasks.start(task, "stale", TaskStatus.PROCESSING)
    assert Janitor(redis, lifecycle, quick).sweep() == [task.id], "'stale' never announced itself: taken for dead"
    new = stores.tasks.start(task, "fresh", TaskStatus.PROCESSING)
    assert new and new != old
    stale = [run_fence(task.id, old)]
    transcript = Transcript(
        task=TaskType.TRANSCRIBE, language="en", language_probability=1.0, duration=1.0, text="x", segments=[]
    )

    assert not stores.tasks.update(task.id, fences=stale, progress=0.9)
    assert not stores.events.add(task.id, {"type": "segment", "progress": "0.9"}, fences=stale)
    assert not stores.chunks.create(task.id, [Chunk(index=0, start=0.0, end=1.0)], "en", 1.0, run=old)
    assert not lifecycle.fail(task, "internal_error", "the stale run failed", fences=stale)
    assert not lifecycle.complete(task, transcript, 1.0, fences=stale)

    now = stores.tasks.get(task.id)
    assert (now.status, now.worker, now.run, now.progress) == (TaskStatus.PROCESSING, "fresh", new, 0.0)
    assert stores.chunks.load(task.id) is None
    assert stores.storage.path(task.upload_name).exists(), "the new run keeps its media"
    assert stores.tasks.update(task.id, fences=[run_fence(task.id, new)], progress=0.5)


@pytest.mark.parametrize("plan", ["open", "unreadable"])
def test_a_split_lost_before_its_plan_closed_puts_the_task_back_whole(redis: Redis, quick: Settings, plan: str) -> None:
    stores = Stores.open(redis, quick)
    lifecycle = Lifecycle(redis, stores, keep_uploads=False)
    task = queued_task(redis, stores)
    run = stores.tasks.start(task, "splitter", TaskStatus.PROCESSING)
    redis.delete(normal_queue(redis).key)  # the splitter took the task's job
    assert stores.chunks.create(task.id, [Chunk(index=0, start=0.0, end=1.0)], "en", 1.0, run=run)
    # The split had said the task is split, and died before it closed the plan (or an earlier version, whose plans
    # read differently, split it before an upgrade).
    assert stores.tasks.update(task.id, fences=[run_fence(task.id, run)], chunks=1)
    if plan == "unreadable":
        redis.hdel(keys.chunks_key(task.id), "count")
    assert Janitor(redis, lifecycle, quick).sweep() == [task.id], "'splitter' never announced itself: taken for dead"
    back = stores.tasks.get(task.id)
    assert back.status is TaskStatus.QUEUED and back.run is None
    assert normal_queue(redis).job_ids == [task.id], "the task's own job is queued again, to be split again"


def test_a_stitch_lost_with_its_worker_is_queued_again_until_the_attempts_are_spent(
    redis: Redis, quick: Settings
) -> None:
    stores = Stores.open(redis, quick)
    janitor = Janitor(redis, Lifecycle(redis, stores, keep_uploads=False), quick)
    task = queued_task(redis, stores)
    run = stores.tasks.start(task, "splitter", TaskStatus.PROCESSING)
    queue = normal_queue(redis)
    redis.delete(queue.key)  # the splitter took the task's job
    assert stores.chunks.create(task.id, [Chunk(index=0, start=0.0, end=1.0)], "en", 1.0, run=run)
    assert stores.tasks.update(task.id, fences=[run_fence(task.id, run)], chunks=1)
    assert stores.chunks.close(task.id, run, 1.0) is False
    assert stores.chunks.take(task.id, 1) == [0] and stores.chunks.claim(task.id, 0, "decoder") == 1
    # The last chunk is done; its worker ('decoder', never announced: taken for dead) did not stitch.
    assert stores.chunks.finish(task.id, 0, 1, [make_segment(0, 0.0, 1.0, " x")], 1.0) is True
    redis.delete(queue.key)
    stitch = queues.stitch_job_id(task.id)
    janitor.hand_back(stitch, "stopping")  # a worker that stops while it stitches hands the stitch back
    assert queue.job_ids == [stitch]
    redis.delete(queue.key)

    for attempt in range(1, quick.max_attempts + 1):
        assert janitor.sweep() == [stitch] and queue.job_ids == [stitch], f"stitch {attempt} queued"
        assert janitor.sweep() == [], "while it waits, it is in hand"
        redis.lpop(queue.key)  # a worker takes it...
        announce(redis, "stitcher", holding=stitch)
        redis.delete(keys.recovery_lock_key(stitch))  # (a minute on)
        assert janitor.sweep() == [], "...and while it holds it, it is in hand"
        fleet.withdraw(redis, "stitcher")  # ...and dies
        redis.delete(keys.recovery_lock_key(stitch))
    assert janitor.sweep() == [task.id]
    failed = stores.tasks.get(task.id)
    assert (failed.status, failed.error_code) == (TaskStatus.FAILED, "worker_lost")
    assert "stitching this task were lost 3 times" in (failed.error_message or "")


def test_a_chunk_taken_back_is_not_finished_by_its_old_worker(redis: Redis, quick: Settings) -> None:
    stores = Stores.open(redis, quick)
    lifecycle = Lifecycle(redis, stores, keep_uploads=False)
    task = queued_task(redis, stores)
    run = stores.tasks.start(task, "splitter", TaskStatus.PROCESSING)
    assert stores.chunks.create(task.id, [Chunk(index=0, start=0.0, end=1.0)], "en", 1.0, run=run)
    assert stores.tasks.update(task.id, fences=[run_fence(task.id, run)], chunks=1)
    assert stores.chunks.close(task.id, run, 1.0) is False, "the split is done; its chunk is not"
    assert stores.chunks.take(task.id, want=1) == [0]
    queues.enqueue_chunks(redis, stores.tasks.get(task.id), [0], ttl_s=60)
    redis.delete(normal_queue(redis).key)  # workers took the task's job, then the chunk's
    old = stores.chunks.claim(task.id, 0, "stale")
    assert not stores.chunks.claim(task.id, 0, "other"), "a chunk in hand is not taken twice"
    assert f"{task.id}-0" in Janitor(redis, lifecycle, quick).sweep()
    new = stores.chunks.claim(task.id, 0, "fresh")
    assert new == old + 1
    stale = [run_fence(task.id, run), chunk_fence(task.id, 0, old)]

    assert stores.chunks.progress(task.id, 0, old, 0.5) is None
    assert stores.chunks.finish(task.id, 0, old, [make_segment(1, 0.0, 1.0, " x")], 1.0) is None
    assert not stores.events.add(task.id, {"type": "segment"}, fences=stale)
    assert not lifecycle.fail(task, "timeout", "the stale chunk ran out of time", fences=stale)
    assert stores.tasks.get(task.id).status is TaskStatus.PROCESSING
    assert stores.chunks.finish(task.id, 0, new, [make_segment(1, 0.0, 1.0, " x")], 1.0) is True, "the last chunk"


def task_of(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


@pytest.mark.slow
def test_a_worker_taken_for_dead_does_not_write_over_the_new_run(
    api: httpx.Client, served: Callable[[str], None], start_worker: StartWorker, redis: Redis
) -> None:
    served("tiny.en")
    task_id = submit(api, LONG).json()["id"]
    stale = start_worker(burst=False, worker_ttl_s=TTL_S)
    first = wait_for(lambda: (t := task_of(api, task_id))["progress"] > 0 and t)
    stale.send_signal(signal.SIGSTOP)  # frozen mid-run: its announcement lapses, yet it is not dead
    fresh = start_worker(burst=False, worker_ttl_s=TTL_S)
    second = wait_for(lambda: (t := task_of(api, task_id))["worker"] not in (None, first["worker"]) and t, 60)
    wait_for(lambda: task_of(api, task_id)["progress"] > 0)
    stale.send_signal(signal.SIGCONT)

    done = wait_for(lambda: (t := task_of(api, task_id))["status"] == "completed" and t, timeout_s=120)
    # Two runs, or more where a loaded machine let a live worker's announcement lapse too: each later run is fenced
    # from the ones before it all the same.
    assert done["attempts"] >= 2 and second["attempts"] >= 2
    span = (datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])).total_seconds()
    assert done["processing_seconds"] <= span, "the result is the new run's, not the stale run's"
    progress, run_started = [], False
    for _, fields in redis.xrange(keys.events_key(task_id)):
        if fields.get(b"status") == b"processing":
            run_started, progress = True, []
        elif run_started and fields[b"type"] == b"segment":
            progress.append(float(fields[b"progress"]))
    assert progress and progress == sorted(progress), f"only the new run streams its progress: {progress}"
    for worker in (stale, fresh):
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(own_redis.url)
    yield client
    client.close()


def test_a_redis_restart_is_no_evidence_that_workers_died(
    own_redis: RedisServer, own_client: Redis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"redis_url": own_redis.url, "worker_ttl_s": TTL_S})
    redis = own_client
    stores = Stores.open(redis, settings)
    janitor = Janitor(redis, Lifecycle(redis, stores, keep_uploads=False), settings)
    running = {}
    for worker in ("comes-back", "gone-for-good"):
        task = queued_task(redis, stores)
        redis.lpop(normal_queue(redis).key)
        assert stores.tasks.start(task, worker, TaskStatus.PROCESSING)
        running[worker] = task.id
    wait_for(lambda: int(redis.info("server")["uptime_in_seconds"]) >= TTL_S, timeout_s=TTL_S + 2)
    for worker, task_id in running.items():  # they keep announcing themselves: the first announcements may lapse
        announce(redis, worker, ttl_s=TTL_S, holding=task_id)  # while Redis's uptime reaches one TTL
    assert janitor.sweep() == []

    own_redis.stop()
    time.sleep(TTL_S + 1)  # the outage: every announcement lapses meanwhile
    own_redis.start()
    assert fleet.live_workers(redis) == [], "no announcement survived the outage"
    assert janitor.sweep() == [], "workers have had no time to announce themselves again"

    def comes_back_and_sweep() -> list[str]:
        announce(redis, "comes-back", ttl_s=TTL_S, holding=running["comes-back"])  # it keeps announcing itself
        return janitor.sweep()

    recovered = wait_for(comes_back_and_sweep, timeout_s=3 * TTL_S)
    assert recovered == [running["gone-for-good"]], "only the worker that did not come back is taken for dead"
    assert stores.tasks.get(running["comes-back"]).status is TaskStatus.PROCESSING


@pytest.mark.slow
def test_a_worker_announces_itself_again_as_soon_as_redis_is_back(
    own_redis: RedisServer, own_client: Redis, start_worker: StartWorker
) -> None:
    redis = own_client
    worker = start_worker(burst=False, redis_url=own_redis.url, worker_ttl_s=TTL_S)
    # Idle in RQ's loop: its signal handlers are in place (they are installed after its start-up writes).
    wait_for(lambda: [w for w in Worker.all(connection=redis) if w.get_state() == "idle"], timeout_s=120)
    own_redis.stop()
    time.sleep(3 * TTL_S)  # the outage outlasts the announcement, and the backoff of a worker that retries
    own_redis.start()
    # Back within one TTL, before any janitor could take its silence for death.
    wait_for(lambda: fleet.live_workers(redis), timeout_s=TTL_S)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

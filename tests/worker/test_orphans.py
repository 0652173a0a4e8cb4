"""Runs left behind on live workers: a task or a chunk that a live worker's state names but that it no longer runs
(its last write failed once Redis retries ran out) is recovered once a grace period has passed.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis import Redis
from rq import Queue

from shared import fleet, keys, queues
from shared.chunks import ChunkStore
from shared.enums import ChunkStatus, Priority, TaskStatus
from shared.settings import Settings
from shared.stores import Stores
from tests.conftest import DATA, JFK, submit, wait_for

StartWorker = Callable[..., subprocess.Popen[str]]
LJSPEECH = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
SPLIT = {"split_after_s": 60.0, "chunk_target_s": 30.0}
TTL_S = 5


def task_of(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


def real_worker_id(redis: Redis) -> str:
    """The id of the one real worker (not the test's announcement of the served model)."""
    ids = wait_for(lambda: [w.id for w in fleet.live_workers(redis) if not w.id.startswith("announced-")])
    return str(ids[0])


@pytest.mark.slow
def test_a_task_left_processing_on_a_live_worker_is_run_again(
    api: httpx.Client, served: Callable[[str], None], start_worker: StartWorker, redis: Redis, settings: Settings
) -> None:
    served("tiny.en")
    task_id = submit(api, JFK).json()["id"]
    assert redis.lpop(Queue(keys.queue_name("tiny.en", Priority.NORMAL), connection=redis).key)
    worker = start_worker(burst=False, worker_ttl_s=TTL_S)
    stores = Stores.open(redis, settings)
    # The worker took the job and started it, then lost it: its final write failed and the job ended.
    assert stores.tasks.start(stores.tasks.get(task_id), real_worker_id(redis), TaskStatus.PROCESSING)

    done = wait_for(lambda: (t := task_of(api, task_id))["status"] == "completed" and t, timeout_s=60)
    assert done["attempts"] == 2 and "ask not what your country" in done["result"]["text"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


@pytest.mark.slow
def test_a_chunk_left_processing_on_a_live_worker_is_run_again(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: StartWorker,
    redis: Redis,
    settings: Settings,
) -> None:
    served("tiny.en")
    api = api_factory(**SPLIT)
    chunks = ChunkStore(redis, settings.task_ttl_s)
    task_id = submit(api, LJSPEECH).json()["id"]
    worker = start_worker(burst=False, worker_ttl_s=TTL_S, **SPLIT)
    worker_id = real_worker_id(redis)
    queue = Queue(keys.queue_name("tiny.en", Priority.NORMAL), connection=redis)

    def lose_a_waiting_chunk() -> int | None:
        """Take a waiting chunk's job off the queue and mark the chunk as the worker's: a run it no longer holds."""
        split = chunks.load(task_id)
        waiting = [c.chunk.index for c in split.chunks if c.state is ChunkStatus.QUEUED] if split else []
        for index in waiting:
            if redis.lrem(queue.key, 0, queues.chunk_job_id(task_id, index)):
                assert chunks.claim(task_id, index, worker_id)
                return index
        return None

    lost = wait_for(lambda: lose_a_waiting_chunk() is not None, timeout_s=120)
    assert lost
    done = wait_for(lambda: (t := task_of(api, task_id))["status"] in ("completed", "failed") and t, timeout_s=180)
    assert done["status"] == "completed" and done["chunks_done"] == done["chunks"]
    assert "gothic and roman" in done["result"]["text"].lower()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0

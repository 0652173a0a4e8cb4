"""The end of a task, on a real Redis and a real upload volume: `Lifecycle.release` frees all a task held, once."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from shared import keys, queues
from shared.enums import Priority, TaskStatus
from shared.lifecycle import Lifecycle
from shared.schemas import Chunk, Task
from shared.settings import Settings
from shared.stores import Stores
from tests.conftest import queued_task


def held_task(redis: Redis, stores: Stores) -> Task:
    """A task split by its first run, holding an upload, its job, a chunk plan, a queued chunk job and chunk audio."""
    task = queued_task(redis, stores)
    run = stores.tasks.start(task, "splitter", TaskStatus.PROCESSING)
    assert stores.chunks.create(task.id, [Chunk(index=0, start=0.0, end=5.0)], "en", 1.0, run)
    queues.enqueue_chunks(redis, task, [0], ttl_s=60)
    audio = stores.storage.chunk_path(task.id, 0, run)
    audio.parent.mkdir(parents=True)
    audio.write_bytes(b"RIFF")
    return task


def waiting(redis: Redis) -> set[str]:
    """Every job id waiting on the normal tiny.en queue."""
    return set(Queue(keys.queue_name("tiny.en", Priority.NORMAL), connection=redis).job_ids)


def test_release_frees_nothing_while_the_task_is_active_and_everything_once_it_ended(
    redis: Redis, settings: Settings
) -> None:
    stores = Stores.open(redis, settings)
    lifecycle = Lifecycle(redis, stores, keep_uploads=False)
    task = held_task(redis, stores)
    assert task.upload_name is not None
    audio = stores.storage.chunk_path(task.id, 0, run=1)

    assert lifecycle.release(task) is False
    assert waiting(redis) == {task.id, f"{task.id}-0"}
    assert stores.chunks.count(task.id) == 1 and audio.exists() and stores.storage.path(task.upload_name).exists()

    assert lifecycle.cancel(task) is True
    assert stores.tasks.get(task.id).status is TaskStatus.CANCELLED
    assert waiting(redis) == set()
    assert stores.chunks.load(task.id) is None
    assert stores.storage.names() == []
    assert lifecycle.release(task) is True, "a second release finds nothing left and does no harm"


def test_kept_uploads_stay_after_the_end_but_go_with_a_deleted_task(redis: Redis, settings: Settings) -> None:
    stores = Stores.open(redis, settings)
    lifecycle = Lifecycle(redis, stores, keep_uploads=True)
    task = held_task(redis, stores)
    assert task.upload_name is not None

    assert lifecycle.fail(task, "worker_lost", "gone")
    assert stores.storage.names() == [task.upload_name], "kept media, chunk audio gone"
    lifecycle.delete(task)
    assert stores.storage.names() == []
    left = [key.decode() for key in redis.scan_iter(f"{keys.PREFIX}:*") if task.id.encode() in key]
    assert left == [] and not redis.exists(f"rq:job:{task.id}", f"rq:job:{task.id}-0")

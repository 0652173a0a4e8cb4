"""A split task's plan: opened with its first chunks, grown while the split goes on, closed at the end; whichever
comes last, the close or the last chunk's finish, is told the task is done, once."""

from __future__ import annotations

from redis import Redis

from shared.enums import ChunkStatus, TaskStatus
from shared.schemas import Chunk, Task
from shared.settings import Settings
from shared.stores import Stores
from tests.conftest import make_segment, queued_task


def chunk(index: int) -> Chunk:
    return Chunk(index=index, start=10.0 * index, end=10.0 * (index + 1))


def split_by_its_run(redis: Redis, settings: Settings) -> tuple[Stores, Task, int]:
    stores = Stores.open(redis, settings)
    task = queued_task(redis, stores, enqueue=False)
    run = stores.tasks.start(task, "splitter", TaskStatus.PROCESSING)
    assert stores.chunks.create(task.id, [chunk(0)], "en", 1.0, run)
    return stores, task, run


def decode(stores: Stores, task: Task, index: int) -> bool | None:
    """Queue, claim and finish one chunk as a worker does; what the finish says."""
    stores.chunks.take(task.id, want=index + 1)
    attempt = stores.chunks.claim(task.id, index, "decoder")
    assert attempt, f"chunk {index} could be taken"
    return stores.chunks.finish(task.id, index, attempt, [make_segment(1, 0.0, 1.0, " x")], 10.0)


def test_chunks_of_an_open_plan_are_decoded_and_the_close_completes_it_when_it_comes_last(
    redis: Redis, settings: Settings
) -> None:
    stores, task, run = split_by_its_run(redis, settings)
    assert decode(stores, task, 0) is False, "the first chunk is done while the split goes on: not the last"
    assert stores.chunks.append(task.id, [chunk(1)], run)
    assert not stores.chunks.append(task.id, [chunk(1)], run), "a chunk is added once"
    assert not stores.chunks.append(task.id, [chunk(3)], run), "chunks are added in order"
    assert decode(stores, task, 1) is False
    split = stores.chunks.load(task.id)
    assert split is not None and split.duration is None and not split.complete and split.finished == 2
    assert stores.chunks.close(task.id, run, 20.0) is True, "every chunk was done: the close completes the task"
    split = stores.chunks.load(task.id)
    assert split is not None and split.complete and split.duration == 20.0
    assert not stores.chunks.append(task.id, [chunk(2)], run), "a closed plan takes no more chunks"


def test_the_last_chunk_completes_a_closed_plan(redis: Redis, settings: Settings) -> None:
    stores, task, run = split_by_its_run(redis, settings)
    assert stores.chunks.append(task.id, [chunk(1), chunk(2)], run)
    assert stores.chunks.count(task.id) == 3
    assert decode(stores, task, 0) is False
    assert stores.chunks.close(task.id, run, 30.0) is False, "two chunks are still to come"
    assert decode(stores, task, 1) is False
    assert decode(stores, task, 2) is True, "the last chunk of the closed plan: its worker stitches"
    split = stores.chunks.load(task.id)
    assert split is not None and [c.state for c in split.chunks] == [ChunkStatus.DONE] * 3


def test_a_split_whose_run_lost_the_task_can_neither_grow_nor_close_its_plan(redis: Redis, settings: Settings) -> None:
    stores, task, run = split_by_its_run(redis, settings)
    assert stores.tasks.requeue(stores.tasks.get(task.id), lambda pipe: None), "the janitor took the task back"
    assert not stores.chunks.append(task.id, [chunk(1)], run)
    newer = stores.tasks.start(task, "other", TaskStatus.PROCESSING)
    assert newer > run
    assert not stores.chunks.append(task.id, [chunk(1)], run)
    assert stores.chunks.close(task.id, run, 10.0) is None
    assert stores.chunks.claim(task.id, 0, "decoder") == 0, "the old run's plan is not the task's"
    assert stores.chunks.create(task.id, [], "en", 1.0, newer), "the newer run opens its own plan"
    assert stores.chunks.close(task.id, newer, 10.0) is True, "no speech: no chunks, complete at the close"

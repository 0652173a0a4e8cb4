"""Filling a batch: chunk jobs waiting on the queue in hand that can share the decode of the chunk taken.

RQ hands a worker one job, from its highest-priority queue that has any; the worker then takes more chunk jobs
from that same queue, in queue order, while their windows can share the batch (the same task type, language and
decoding options: `windows.batch_key`), up to the batch width. A job is taken by removing it from the queue
(LREM: of several workers, one gets it), then claiming its chunk as RQ's job would; the worker says it holds it
at once, so the janitor puts it back if the worker dies mid-batch. Jobs of other priorities are left alone: a
high-priority task waits for the batch in hand at most, and joins the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import cast

from rq.exceptions import NoSuchJobError
from rq.job import Job

from shared import queues
from shared.errors import TaskNotFound
from shared.schemas import AFTER_DECODE_OPTIONS, Task
from shared.settings import Settings
from worker.chunk_runs import ChunkRun, take
from worker.context import WorkerContext

log = logging.getLogger(__name__)

# How far down the queue a worker looks for chunk jobs to join its batch.
_LOOK_AHEAD = 64


def width(settings: Settings, device: str) -> int:
    """Windows decoded at once: the setting, or 8 on a GPU (whose cores one window leaves idle) and 1 on CPU (where
    one window keeps the cores busy, and batches measured slower: see README, Long files)."""
    if settings.batch_windows:
        return settings.batch_windows
    return 8 if device == "cuda" else 1


def task_key(task: Task, language: str | None) -> tuple[str, ...]:
    """What must match for two tasks' windows to share a batch (windows.batch_key, before any audio is read)."""
    options = task.options.model_dump_json(
        exclude={"language", "clip_timestamps", "vad_filter", "vad_parameters", *AFTER_DECODE_OPTIONS}
    )
    return (task.task_type.value, language or "", options)


def more(ctx: WorkerContext, first: ChunkRun) -> list[ChunkRun]:
    """Chunks taken from the queue of the first to share its batch: compatible ones, in queue order, up to the width."""
    room = width(ctx.settings, ctx.engine.device) - 1
    if room <= 0:
        return []
    want = task_key(first.task, first.split.language)
    queue = queues.task_queue(ctx.redis, first.task)
    taken: list[ChunkRun] = []
    for task_id, index in _waiting_chunks(ctx, queue.key):
        if len(taken) >= room:
            break
        if not _fits(ctx, task_id, want) or not _dequeue(ctx, queue.key, queues.chunk_job_id(task_id, index)):
            continue
        run = take(ctx, task_id, index)
        if run is not None:
            taken.append(run)
    return taken


def _waiting_chunks(ctx: WorkerContext, queue_key: str) -> Iterator[tuple[str, int]]:
    """The chunk jobs near the front of a queue, as (task id, chunk index)."""
    for raw in cast(list[bytes], ctx.redis.lrange(queue_key, 0, _LOOK_AHEAD - 1)):
        task_id, _, index = raw.decode().partition("-")
        if index.isdigit():
            yield task_id, int(index)


def _fits(ctx: WorkerContext, task_id: str, want: tuple[str, ...]) -> bool:
    """True if the task's windows can share the batch."""
    try:
        task = ctx.stores.tasks.get(task_id)
    except TaskNotFound:
        return False
    return task_key(task, task.language) == want


def _dequeue(ctx: WorkerContext, queue_key: str, job_id: str) -> bool:
    """Take a job off its queue for this worker; False if another worker took it first."""
    if not ctx.redis.lrem(queue_key, 1, job_id):
        return False
    if ctx.presence is not None:
        ctx.presence.hold_also(job_id)
    try:
        Job.fetch(job_id, connection=ctx.redis).delete(remove_from_queue=False)
    except NoSuchJobError:
        pass
    return True

"""Putting tasks on their RQ queues and finding where they stand."""

from __future__ import annotations

from collections.abc import Iterable

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from shared import keys
from shared.enums import Priority
from shared.schemas import Task

# The API names the jobs by their dotted paths, so it never imports the engine.
TRANSCRIBE_JOB = "worker.jobs.transcribe"
CHUNK_JOB = "worker.chunk_jobs.transcribe_chunk"
STITCH_JOB = "worker.chunk_jobs.stitch_orphan"


def task_queue(redis: Redis, task: Task) -> Queue:
    """The queue for a task's model and priority."""
    return Queue(keys.queue_name(task.model, task.priority), connection=redis)


def enqueue(redis: Redis, task: Task, pipe: Pipeline, ttl_s: int) -> None:
    """Enqueue the task's job inside the caller's transaction; the job id is the task id."""
    _enqueue(task_queue(redis, task), TRANSCRIBE_JOB, (task.id,), task.id, ttl_s, pipe)


def chunk_job_id(task_id: str, index: int) -> str:
    """The RQ job id of one chunk of a split task."""
    return f"{task_id}-{index}"


def enqueue_chunks(
    redis: Redis,
    task: Task,
    indexes: Iterable[int],
    ttl_s: int,
    at_front: bool = False,
    pipe: Pipeline | None = None,
) -> None:
    """Enqueue chunk jobs on the task's queue in one transaction (the caller's, if given).

    Any worker of the model may take any of them.
    """
    indexes = list(indexes)
    if not indexes:
        return
    queue = task_queue(redis, task)
    own = pipe is None
    if pipe is None:
        pipe = redis.pipeline()
        pipe.multi()
    for index in indexes:
        _replace(redis, chunk_job_id(task.id, index), pipe)
        _enqueue(queue, CHUNK_JOB, (task.id, index), chunk_job_id(task.id, index), ttl_s, pipe, at_front)
    if own:
        pipe.execute()


def chunk_job_ids(task_id: str, count: int) -> list[str]:
    """The RQ job ids of every chunk of a split task."""
    return [chunk_job_id(task_id, index) for index in range(count)]


def stitch_job_id(task_id: str) -> str:
    """The RQ job id that stitches a split task whose last chunk's worker died before it could."""
    return f"{task_id}-stitch"


def enqueue_stitch(redis: Redis, task: Task, ttl_s: int) -> None:
    """Enqueue the stitch of a split task at the front of its queue: its words are all decoded."""
    pipe = redis.pipeline()
    pipe.multi()
    _replace(redis, stitch_job_id(task.id), pipe)
    _enqueue(task_queue(redis, task), STITCH_JOB, (task.id,), stitch_job_id(task.id), ttl_s, pipe, at_front=True)
    pipe.execute()


def position(redis: Redis, task: Task) -> int | None:
    """1 for the next job on the task's queue; None if the job is not waiting there."""
    index = task_queue(redis, task).get_job_position(task.id)
    return None if index is None else index + 1


def drop_jobs(redis: Redis, job_ids: Iterable[str]) -> None:
    """Take an ended task's jobs off their queues and delete them; one a worker runs now is left to end by itself."""
    for job_id in job_ids:
        job = _fetch(redis, job_id)
        if job is not None and job.get_status(refresh=False) is not JobStatus.STARTED:
            job.delete(remove_from_queue=True)


def _fetch(redis: Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return None


def _enqueue(
    queue: Queue, job: str, args: tuple[str | int, ...], job_id: str, ttl_s: int, pipe: Pipeline, at_front: bool = False
) -> None:
    """Enqueue one job in the caller's transaction. RQ never times it out: the worker sets a limit from the audio's
    duration once it knows it."""
    queue.enqueue_call(
        job,
        args=args,
        job_id=job_id,
        timeout=-1,
        result_ttl=ttl_s,
        failure_ttl=ttl_s,
        at_front=at_front,
        pipeline=pipe,
    )


def _replace(redis: Redis, job_id: str, pipe: Pipeline) -> None:
    """Delete, in the caller's transaction, a job about to be enqueued again under the same id."""
    job = _fetch(redis, job_id)
    if job is not None:
        job.delete(pipeline=pipe, remove_from_queue=True)


def requeue(redis: Redis, task: Task, ttl_s: int, pipe: Pipeline) -> None:
    """Put a task's job back at the end of its queue, as a fresh RQ job with the same id.

    Inside the caller's transaction, which has begun (MULTI), so the job is replaced only if the transaction runs.
    """
    _replace(redis, task.id, pipe)
    enqueue(redis, task, pipe, ttl_s)


def waiting_ids_of(redis: Redis, queue_names: list[str]) -> set[str]:
    """Ids of the jobs waiting on these queues."""
    pipe = redis.pipeline()
    for name in queue_names:
        pipe.lrange(Queue(name, connection=redis).key, 0, -1)
    return {raw.decode() for ids in pipe.execute() for raw in ids}


def queued_counts(redis: Redis, models: list[str]) -> dict[str, int]:
    """Jobs waiting per priority, over the queues of these models."""
    pipe = redis.pipeline()
    for model in models:
        for priority in Priority:
            pipe.llen(Queue(keys.queue_name(model, priority), connection=redis).key)
    lengths = iter(pipe.execute())
    counts = dict.fromkeys((p.value for p in Priority), 0)
    for _ in models:
        for priority in Priority:
            counts[priority.value] += int(next(lengths))
    return counts

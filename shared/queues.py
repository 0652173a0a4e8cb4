"""Putting tasks on their RQ queues and finding where they stand."""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from shared import keys
from shared.schemas import Task

# The API names the job by its dotted path, so it never imports the engine.
TRANSCRIBE_JOB = "worker.jobs.transcribe"


def task_queue(redis: Redis, task: Task) -> Queue:
    """The queue for a task's model and priority."""
    return Queue(keys.queue_name(task.model, task.priority), connection=redis)


def enqueue(redis: Redis, task: Task, pipe: Pipeline, timeout_s: int, ttl_s: int) -> None:
    """Enqueue the task's job inside the caller's transaction; the job id is the task id."""
    task_queue(redis, task).enqueue_call(
        TRANSCRIBE_JOB,
        args=(task.id,),
        job_id=task.id,
        timeout=timeout_s,
        result_ttl=ttl_s,
        failure_ttl=ttl_s,
        pipeline=pipe,
    )


def position(redis: Redis, task: Task) -> int | None:
    """1 for the next job on the task's queue; None if the job is not waiting there."""
    index = task_queue(redis, task).get_job_position(task.id)
    return None if index is None else index + 1


def remove(redis: Redis, task: Task) -> None:
    """Take the task's job off its queue and delete it, if it still exists."""
    try:
        Job.fetch(task.id, connection=redis).delete(remove_from_queue=True)
    except NoSuchJobError:
        pass

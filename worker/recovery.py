"""Recovery: work whose worker died goes back on its queue, up to a number of attempts, then fails.

A whole task is recovered as one; a split task is recovered chunk by chunk, so a dead worker loses only
the chunk it held.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue

from shared import fleet, keys, queues
from shared.enums import ChunkStatus, TaskStatus
from shared.errors import TaskNotFound
from shared.lifecycle import Lifecycle
from shared.schemas import Task
from shared.settings import Settings
from worker import stitch

log = logging.getLogger(__name__)


class Janitor:
    """Run by every worker every few seconds; any number may run at once, and each task is recovered once."""

    def __init__(self, redis: Redis, lifecycle: Lifecycle, settings: Settings) -> None:
        self.redis = redis
        self.lifecycle = lifecycle
        self.store = lifecycle.stores.tasks
        self.chunks = lifecycle.stores.chunks
        self.settings = settings
        self._unqueued: set[str] = set()
        self._unqueued_chunks: set[str] = set()

    def sweep(self) -> list[str]:
        """Recover the work of dead workers and the jobs lost between a queue and a worker; the job ids."""
        live = {worker.id for worker in fleet.live_workers(self.redis)}
        running = self.store.running()
        orphans = [task for task in running if task.chunks is None and task.worker not in live]
        recovered = [task.id for task in orphans if self.recover(task, task.worker or "")]
        waiting = queues.waiting_ids_of(self.redis, self._queue_names())
        unqueued_chunks: set[str] = set()
        for task in running:
            if task.chunks is not None:
                recovered += self._sweep_split(task, live, waiting, unqueued_chunks)
        self._unqueued_chunks = unqueued_chunks
        self.lifecycle.stores.callbacks.release_expired_leases()
        return recovered + self._requeue_lost_jobs(waiting)

    def hand_back(self, job_id: str, worker: str) -> None:
        """Put the job a stopping worker held back on its queue: a whole task, or one chunk of a split one."""
        task_id, _, index = job_id.partition("-")
        try:
            task = self.store.get(task_id)
        except TaskNotFound:
            return
        if index:
            self._requeue_chunk(task, int(index), worker)
        elif task.chunks is None:  # once split, the task's chunks stand on their own
            self.recover(task, worker)

    def recover(self, task: Task, worker: str) -> bool:
        """Put a task taken by `worker` back on its queue, or fail it once it has used its attempts."""
        if task.attempts >= self.settings.max_attempts:
            message = f"the worker running this task was lost {task.attempts} times; giving up"
            return self._give_up(task, message, expect_worker=worker)
        if not self.store.advance(task.id, TaskStatus.QUEUED, expect_worker=worker, progress=0.0):
            return False
        queues.requeue(self.redis, task, self.settings.task_ttl_s)
        log.warning("task %s put back on its queue: worker %s is gone (attempt %d)", task.id, worker, task.attempts)
        return True

    def _sweep_split(self, task: Task, live: set[str], waiting: set[str], unqueued: set[str]) -> list[str]:
        """Chunks of dead workers go back on the queue; chunk jobs lost twice running are queued again."""
        split = self.chunks.load(task.id)
        if split is None:
            return []
        if split.finished == len(split.chunks):  # the worker that finished the last chunk died before stitching
            return [task.id] if stitch.finish(task, self.chunks, self.lifecycle) else []
        recovered: list[str] = []
        want = fleet.worker_count(self.redis, task.model)  # workers may have come or gone since the split
        queued = self.chunks.take(task.id, len(split.chunks), want)
        queues.enqueue_chunks(self.redis, task, queued, self.settings.task_ttl_s)
        for state in split.chunks:
            job_id = queues.chunk_job_id(task.id, state.chunk.index)
            if state.state is ChunkStatus.PROCESSING and state.worker not in live:
                if state.attempts >= self.settings.max_attempts:
                    message = f"the workers of chunk {state.chunk.index} were lost {state.attempts} times; giving up"
                    return [task.id] if self._give_up(task, message) else recovered
                if self._requeue_chunk(task, state.chunk.index, state.worker or ""):
                    recovered.append(job_id)
            elif state.state is ChunkStatus.QUEUED and job_id not in waiting and state.chunk.index not in queued:
                unqueued.add(job_id)
                if job_id in self._unqueued_chunks and self._lock(job_id):
                    queues.enqueue_chunks(self.redis, task, [state.chunk.index], self.settings.task_ttl_s)
                    log.warning("chunk %s was queued with no job waiting; its job is queued again", job_id)
                    recovered.append(job_id)
        return recovered

    def _requeue_chunk(self, task: Task, index: int, worker: str) -> bool:
        """Put a chunk held by `worker` at the front of its queue, so the file it belongs to is not held up."""
        if not self.chunks.release(task.id, index, worker):
            return False
        queues.enqueue_chunks(self.redis, task, [index], self.settings.task_ttl_s, at_front=True)
        log.warning("chunk %d of task %s put back on its queue: worker %s is gone", index, task.id, worker)
        return True

    def _give_up(self, task: Task, message: str, expect_worker: str | None = None) -> bool:
        if not self.lifecycle.fail(task, "worker_lost", message, expect_worker=expect_worker):
            return False
        log.warning("task %s failed: %s", task.id, message)
        return True

    def _queue_names(self) -> list[str]:
        return [q.name for q in Queue.all(connection=self.redis) if q.name.startswith(keys.PREFIX)]

    def _lock(self, job_id: str) -> bool:
        """True for the one janitor that may re-enqueue this job in the next minute."""
        return bool(self.redis.set(keys.recovery_lock_key(job_id), 1, nx=True, ex=60))

    def _requeue_lost_jobs(self, waiting: set[str]) -> list[str]:
        """Queued tasks whose job is on no queue in two sweeps running: a worker took it and died at once."""
        unqueued = self.store.queued_ids() - waiting
        lost, self._unqueued = unqueued & self._unqueued, unqueued
        requeued = []
        for task_id in lost:
            if not self._lock(task_id):
                continue
            try:
                task = self.store.get(task_id)
            except TaskNotFound:
                continue
            if task.status is TaskStatus.QUEUED:
                queues.requeue(self.redis, task, self.settings.task_ttl_s)
                requeued.append(task_id)
                log.warning("task %s was queued with no job waiting; its job is queued again", task_id)
        return requeued

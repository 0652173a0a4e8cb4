"""Recovery: tasks whose worker died go back on their queue, up to a number of attempts, then fail."""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue

from shared import fleet, keys, queues
from shared.enums import TaskStatus
from shared.errors import TaskNotFound
from shared.schemas import Task
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.store import TaskStore

log = logging.getLogger(__name__)


class Janitor:
    """Run by every worker every few seconds; any number may run at once, and each task is recovered once."""

    def __init__(self, redis: Redis, store: TaskStore, storage: UploadStorage, settings: Settings) -> None:
        self.redis = redis
        self.store = store
        self.storage = storage
        self.settings = settings
        self._unqueued: set[str] = set()

    def sweep(self) -> list[str]:
        """Recover the tasks of dead workers and the jobs lost between a queue and a worker; their ids."""
        live = {worker.id for worker in fleet.live_workers(self.redis)}
        orphans = [task for task in self.store.running() if task.worker not in live]
        recovered = [task.id for task in orphans if self.recover(task, task.worker or "")]
        self.store.release_expired_leases()
        return recovered + self._requeue_lost_jobs()

    def recover(self, task: Task, worker: str) -> bool:
        """Put a task taken by `worker` back on its queue, or fail it once it has used its attempts."""
        if task.attempts >= self.settings.max_attempts:
            message = f"the worker running this task was lost {task.attempts} times; giving up"
            if not self.store.fail(task.id, "worker_lost", message, expect_worker=worker):
                return False
            if task.upload_name and not self.settings.keep_uploads:
                self.storage.remove(task.upload_name)
            log.warning("task %s failed: worker_lost after %d attempts", task.id, task.attempts)
            return True
        if not self.store.advance(task.id, TaskStatus.QUEUED, expect_worker=worker, progress=0.0):
            return False
        queues.requeue(self.redis, task, self.settings.task_ttl_s)
        log.warning("task %s put back on its queue: worker %s is gone (attempt %d)", task.id, worker, task.attempts)
        return True

    def _requeue_lost_jobs(self) -> list[str]:
        """Queued tasks whose job is on no queue in two sweeps running: a worker took it and died at once."""
        names = [q.name for q in Queue.all(connection=self.redis) if q.name.startswith(keys.PREFIX)]
        waiting = queues.waiting_ids_of(self.redis, names)
        unqueued = self.store.queued_ids() - waiting
        lost, self._unqueued = unqueued & self._unqueued, unqueued
        requeued = []
        for task_id in lost:
            if not self.redis.set(keys.recovery_lock_key(task_id), 1, nx=True, ex=60):
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

"""Recovery: work whose run was lost goes back on its queue, up to a number of attempts, then fails.

A run is lost when its worker's announcement has lapsed (the worker died), or when its worker is alive but has not
held the run's job for a grace period of one worker TTL (its last write failed once Redis retries ran out, and the
job ended). A whole task is recovered as one; a split task is recovered chunk by chunk, so a dead worker loses only
the chunk it held. Each recovery is fenced by the run it ends, so of any number of janitors one recovers it, once.

Redis being away is no evidence that anyone died, though every announcement lapses in an outage longer than the
worker TTL: a janitor that has been out of touch with Redis, or that finds Redis restarted lately, recovers nothing
until the workers have had a TTL to announce themselves again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError
from rq import Queue

from shared import fleet, keys, queues
from shared.chunks import Split, chunk_fence
from shared.enums import ChunkStatus, TaskStatus
from shared.errors import TaskNotFound
from shared.fencing import Fence
from shared.lifecycle import Lifecycle
from shared.schemas import Task
from shared.settings import Settings
from shared.store import run_fence

log = logging.getLogger(__name__)

# A gap between sweeps longer than this share of the worker TTL (they come every third of it) means this janitor
# was out of touch with Redis, or frozen, for long enough that announcements may have lapsed meanwhile.
_OUT_OF_TOUCH = 2 / 3


@dataclass
class _Sighting:
    """What one sweep found: the live workers, the job each holds, the queued jobs, and the runs nobody holds."""

    now: float
    live: set[str]
    held: dict[str, set[str]]
    waiting: set[str]
    unheld: dict[str, float] = field(default_factory=dict)
    unqueued_chunks: set[str] = field(default_factory=set)


class Janitor:
    """Run by every worker every few seconds; any number may run at once, and each lost run is recovered once."""

    def __init__(self, redis: Redis, lifecycle: Lifecycle, settings: Settings) -> None:
        self.redis = redis
        self.lifecycle = lifecycle
        self.store = lifecycle.stores.tasks
        self.chunks = lifecycle.stores.chunks
        self.settings = settings
        self._unqueued: set[str] = set()
        self._unqueued_chunks: set[str] = set()
        self._unheld: dict[str, float] = {}
        self._swept_at: float | None = None
        self._calm_until = 0.0

    def sweep(self) -> list[str]:
        """Recover lost runs and the jobs lost between a queue and a worker, prune the indexes; the job ids."""
        now = time.monotonic()
        self._check_contact(now)
        live = {worker.id for worker in fleet.live_workers(self.redis)}
        seen = _Sighting(now, live, fleet.holdings(self.redis, live), queues.waiting_ids_of(self.redis, self._names()))
        recovered: list[str] = []
        for task in self.store.running():
            if task.chunks is not None:
                recovered += self._sweep_split(task, seen)
            elif self._lost(task.id, task.worker, seen) and self.recover(task):
                recovered.append(task.id)
        self._unheld, self._unqueued_chunks = seen.unheld, seen.unqueued_chunks
        self.lifecycle.stores.callbacks.release_expired_leases()
        recovered += self._requeue_lost_jobs(seen.waiting)
        self.store.prune()
        self._swept_at = time.monotonic()
        return recovered

    def hand_back(self, job_id: str, worker: str) -> None:
        """Put the job a stopping worker held back on its queue: a whole task, or one chunk of a split one."""
        task_id, _, index = job_id.partition("-")
        try:
            task = self.store.get(task_id)
        except TaskNotFound:
            return
        if index == "stitch":  # a stitch is not lost by a worker that stops: it goes back to the front
            queues.enqueue_stitch(self.redis, task, self.settings.task_ttl_s)
        elif index:
            split = self.chunks.load(task.id)
            state = split.chunks[int(index)] if split and int(index) < len(split.chunks) else None
            if state and state.state is ChunkStatus.PROCESSING and state.worker == worker:
                self._requeue_chunk(task, int(index), state.attempts)
        elif task.worker == worker and not self._split_closed(task):  # once split, its chunks stand on their own
            self.recover(task)

    def _split_closed(self, task: Task) -> bool:
        """True once the task's split has cut its last chunk (its plan closed)."""
        split = self.chunks.load(task.id) if task.chunks is not None else None
        return split is not None and split.duration is not None

    def recover(self, task: Task) -> bool:
        """Put a task whose run `task.run` was lost back on its queue, or fail it once it has used its attempts."""
        if task.attempts >= self.settings.max_attempts:
            message = f"the worker running this task was lost {task.attempts} times; giving up"
            return self._give_up(task, message, [run_fence(task.id, task.run)])

        def push(pipe: Pipeline) -> None:
            queues.requeue(self.redis, task, self.settings.task_ttl_s, pipe)

        if not self.store.requeue(task, push):
            return False
        log.warning(
            "task %s put back on its queue: worker %s lost it (attempt %d)", task.id, task.worker, task.attempts
        )
        return True

    def _check_contact(self, now: float) -> None:
        """Recover nothing for a TTL after this janitor was out of touch with Redis, or after Redis restarted."""
        ttl = self.settings.worker_ttl_s
        if self._swept_at is not None and now - self._swept_at > ttl * _OUT_OF_TOUCH:
            log.warning("out of touch with Redis for %.0f s: recovering nothing for %d s", now - self._swept_at, ttl)
            self._calm_until = max(self._calm_until, now + ttl)
        uptime = self._redis_uptime_s()
        if uptime is not None and uptime < ttl:
            self._calm_until = max(self._calm_until, now + ttl - uptime)

    def _redis_uptime_s(self) -> int | None:
        try:
            return int(self.redis.info("server")["uptime_in_seconds"])
        except (ResponseError, KeyError):  # INFO may be disabled on a managed Redis
            return None

    def _lost(self, job_id: str, worker: str | None, seen: _Sighting) -> bool:
        """True once a run's worker is gone, or is alive but has not held its job for a TTL; never while calm."""
        if worker in seen.live and job_id in seen.held.get(worker, set()):
            return False
        since = seen.unheld[job_id] = self._unheld.get(job_id, seen.now)
        if seen.now < self._calm_until:
            return False
        return worker not in seen.live or seen.now - since >= self.settings.worker_ttl_s

    def _stitch_orphan(self, task: Task, split: Split, seen: _Sighting) -> list[str]:
        """Every chunk is done: if the worker that finished the last one died before it stitched, queue a stitch
        for another worker (the janitor has no model or voice encoder to label speakers with). While a chunk's
        worker still holds its job, that worker is stitching (labelling speakers can take a while); while the stitch
        job waits or is held, it is in hand. A stitch lost as often as a run may be lost fails the task."""
        for state in split.chunks:
            if not self._lost(queues.chunk_job_id(task.id, state.chunk.index), state.worker, seen):
                return []
        job_id = queues.stitch_job_id(task.id)
        if any(job_id in jobs for jobs in seen.held.values()) or job_id in seen.waiting or not self._lock(job_id):
            return []
        queued = self.chunks.stitch_queued(task.id)
        if not queued:  # the task ended meanwhile
            return []
        if queued > self.settings.max_attempts:
            message = f"the workers stitching this task were lost {queued - 1} times; giving up"
            return [task.id] if self._give_up(task, message, [run_fence(task.id, split.run)]) else []
        queues.enqueue_stitch(self.redis, task, self.settings.task_ttl_s)
        log.warning("task %s: every chunk is done, but not its stitch; it is queued for a worker", task.id)
        return [job_id]

    def _sweep_split(self, task: Task, seen: _Sighting) -> list[str]:
        """Lost chunk runs go back on the queue; chunk jobs lost twice running are queued again. While the plan is
        open, the task is its split's: if that is lost, the task goes back on its queue whole."""
        split = self.chunks.load(task.id)
        if split is None or split.duration is None:
            # The plan is open (the split's own job holds the task until it closes it) or unreadable (recorded by an
            # earlier version): once that job is lost, the task goes back whole, to be split again.
            return [task.id] if self._lost(task.id, task.worker, seen) and self.recover(task) else []
        if split.complete:
            return self._stitch_orphan(task, split, seen)
        recovered: list[str] = []
        want = fleet.window_slots(self.redis, task.model)  # workers may have come or gone since the split
        queued = self.chunks.take(task.id, want)
        queues.enqueue_chunks(self.redis, task, queued, self.settings.task_ttl_s)
        for state in split.chunks:
            index = state.chunk.index
            job_id = queues.chunk_job_id(task.id, index)
            if state.state is ChunkStatus.PROCESSING and self._lost(job_id, state.worker, seen):
                if state.attempts >= self.settings.max_attempts:
                    message = f"the workers of chunk {index} were lost {state.attempts} times; giving up"
                    fences = [run_fence(task.id, split.run), chunk_fence(task.id, index, state.attempts)]
                    return [task.id] if self._give_up(task, message, fences) else recovered
                if self._requeue_chunk(task, index, state.attempts):
                    recovered.append(job_id)
            elif state.state is ChunkStatus.QUEUED and job_id not in seen.waiting and index not in queued:
                seen.unqueued_chunks.add(job_id)
                if job_id in self._unqueued_chunks and self._lock(job_id):
                    queues.enqueue_chunks(self.redis, task, [index], self.settings.task_ttl_s)
                    log.warning("chunk %s was queued with no job waiting; its job is queued again", job_id)
                    recovered.append(job_id)
        return recovered

    def _requeue_chunk(self, task: Task, index: int, attempt: int) -> bool:
        """Put a chunk whose run `attempt` was lost at the front of its queue, so its file is not held up."""

        def push(pipe: Pipeline) -> None:
            queues.enqueue_chunks(self.redis, task, [index], self.settings.task_ttl_s, at_front=True, pipe=pipe)

        if not self.chunks.requeue(task.id, index, attempt, push):
            return False
        log.warning("chunk %d of task %s put back on its queue: its worker lost it", index, task.id)
        return True

    def _give_up(self, task: Task, message: str, fences: list[Fence]) -> bool:
        if not self.lifecycle.fail(task, "worker_lost", message, fences):
            return False
        log.warning("task %s failed: %s", task.id, message)
        return True

    def _names(self) -> list[str]:
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
                pipe = self.redis.pipeline()
                pipe.multi()
                queues.requeue(self.redis, task, self.settings.task_ttl_s, pipe)
                pipe.execute()
                requeued.append(task_id)
                log.warning("task %s was queued with no job waiting; its job is queued again", task_id)
        return requeued

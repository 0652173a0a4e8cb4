"""The end of a task: the one owner of "a task completed, failed, was cancelled, given up or deleted".

Every path that ends a task (a worker, a chunk worker stitching, the janitor giving up, the API cancelling or
deleting) goes through here, and `release` frees what the task held: its jobs still waiting on a queue, its
chunks (state, jobs, audio) and its media. Release does nothing while the task is still active, so a late or
repeated call is harmless and never frees what a newer run holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis

from shared import queues
from shared.schemas import Task, Transcript
from shared.stores import Stores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lifecycle:
    """Ends tasks and releases what they hold."""

    redis: Redis
    stores: Stores
    keep_uploads: bool

    def complete(self, task: Task, transcript: Transcript, processing_s: float) -> bool:
        """Store the result and mark the task completed; False if it had ended or gone meanwhile."""
        completed = self.stores.tasks.complete(task.id, transcript, processing_s)
        self.release(task)
        return completed

    def fail(self, task: Task, code: str, message: str, expect_worker: str | None = None) -> bool:
        """Mark the task failed with a machine code and a sentence (if still `expect_worker`'s, when given)."""
        failed = self.stores.tasks.fail(task.id, code, message, expect_worker=expect_worker)
        self.release(task)
        return failed

    def cancel(self, task: Task) -> bool:
        """Mark an unfinished task cancelled; False if it had already finished."""
        cancelled = self.stores.tasks.cancel(task.id)
        self.release(task)
        return cancelled

    def delete(self, task: Task) -> None:
        """Remove the task and everything kept about it, then release what it held."""
        pipe = self.redis.pipeline()
        self.stores.tasks.delete(task, pipe)
        self.stores.events.delete(task.id, pipe)
        self.stores.callbacks.delete(task.id, pipe)
        self.stores.summaries.delete(task.id, pipe)
        pipe.execute()
        self.release(task, deleted=True)

    def release(self, task: Task, deleted: bool = False) -> bool:
        """Free what an ended task holds; False, freeing nothing, while it is still active.

        Its media stays where `keep_uploads` says so, unless the task was deleted. A job a worker runs now is
        left alone: the worker finds the task ended at its next segment.
        """
        if self.stores.tasks.active(task.id):
            return False
        count = self.stores.chunks.count(task.id) or task.chunks or 0
        queues.drop_jobs(self.redis, [task.id, *queues.chunk_job_ids(task.id, count)])
        self.stores.chunks.delete(task.id)
        self.stores.storage.remove_chunks(task.id)
        if task.upload_name and (deleted or not self.keep_uploads):
            self.stores.storage.remove(task.upload_name)
        return True

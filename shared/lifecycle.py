"""The end of a task: the one owner of "a task completed, failed, was cancelled, given up or deleted".

Every path that ends a task (a worker, a chunk worker stitching, the janitor giving up, the API cancelling or
deleting) goes through here, and `release` frees what the task held: its jobs still waiting on a queue, its
chunks (state, jobs, audio) and its media. Release does nothing while the task is still active, so a late or
repeated call is harmless and never frees what a newer run holds: a worker's own writes are fenced by its run's
token (`shared.fencing`), so a stale worker's complete or fail is refused, and as its task is still active (held by
the newer run), the release that follows frees nothing. An ended task never runs again, so once it has ended
nothing of it is needed any more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis import Redis

from shared import queues
from shared.fencing import Fence
from shared.schemas import RenderedTranscript, Task, Transcript
from shared.stores import Stores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lifecycle:
    """Ends tasks and releases what they hold."""

    redis: Redis
    stores: Stores
    keep_uploads: bool

    def complete(
        self, task: Task, transcript: Transcript | RenderedTranscript, processing_s: float, fences: Sequence[Fence] = ()
    ) -> bool:
        """Store the result and mark the task completed (while the run's fences hold); False if it had not."""
        completed = self.stores.tasks.complete(task.id, transcript, processing_s, fences)
        self.release(task)
        return completed

    def fail(self, task: Task, code: str, message: str, fences: Sequence[Fence] = ()) -> bool:
        """Mark the task failed with a machine code and a sentence (while the run's fences hold); False if not."""
        failed = self.stores.tasks.fail(task.id, code, message, fences)
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
        jobs = [task.id, *queues.chunk_job_ids(task.id, count), queues.stitch_job_id(task.id)]
        queues.drop_jobs(self.redis, jobs)
        self.stores.chunks.delete(task.id)
        self.stores.storage.remove_chunks(task.id)
        if task.upload_name and (deleted or not self.keep_uploads):
            self.stores.storage.remove(task.upload_name)
        return True

"""One run of one chunk of a split task, and taking a queued chunk for this worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.chunks import Split, chunk_fence
from shared.errors import TaskNotFound
from shared.fencing import Fence
from shared.schemas import Chunk, Task
from shared.store import run_fence
from worker.context import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkRun:
    """One run of one chunk: its task, the plan it belongs to, and its attempt number (the run's token)."""

    task: Task
    split: Split
    index: int
    attempt: int

    @property
    def chunk(self) -> Chunk:
        """The chunk's place on the timeline."""
        return self.split.chunks[self.index].chunk

    @property
    def fences(self) -> list[Fence]:
        """Its writes count while the task's run that made the plan, and this run of the chunk, both hold."""
        return [run_fence(self.task.id, self.split.run), chunk_fence(self.task.id, self.index, self.attempt)]


def take(ctx: WorkerContext, task_id: str, index: int) -> ChunkRun | None:
    """Claim a queued chunk for this worker; None if its task is gone or ended, or the chunk is done or in hand."""
    try:
        task = ctx.stores.tasks.get(task_id)
    except TaskNotFound:
        log.info("task %s no longer exists; skipping chunk %d", task_id, index)
        return None
    attempt = ctx.stores.chunks.claim(task_id, index, ctx.worker_id)
    split = ctx.stores.chunks.load(task_id) if attempt else None
    if split is None:
        log.info("chunk %d of task %s is done or in hand already, or its task has ended; skipping", index, task_id)
        ctx.lifecycle.release(task)
        return None
    return ChunkRun(task, split, index, attempt)

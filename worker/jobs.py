"""RQ job functions, enqueued by dotted name (`worker.jobs.transcribe`)."""

from __future__ import annotations

import logging
import time

from shared.errors import TaskCancelled, TaskNotFound, WhisperqError
from shared.schemas import Task
from worker import context, engine
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def transcribe(task_id: str) -> None:
    """Run one task: transcribe its media, store the result, mark it completed or failed."""
    ctx = context.current()
    try:
        task = ctx.store.get(task_id)
    except TaskNotFound:
        log.info("task %s no longer exists; skipping", task_id)
        return
    if task.status.finished or not ctx.store.start(task, ctx.worker_id):
        log.info("task %s is %s; skipping", task_id, task.status.value)
        return
    try:
        _run(ctx, task)
    except WhisperqError as exc:
        log.info("task %s failed: %s (%s)", task_id, exc.message, exc.code)
        ctx.store.fail(task_id, exc.code, exc.message)
    except Exception as exc:
        ctx.store.fail(task_id, "internal_error", f"the worker failed unexpectedly: {type(exc).__name__}: {exc}")
        raise
    finally:
        if task.upload_name and not ctx.settings.keep_uploads:
            ctx.storage.remove(task.upload_name)


def _progress(ctx: WorkerContext, task_id: str, share: float) -> None:
    """Record progress; a task that was cancelled or deleted meanwhile stops here, between segments."""
    if not ctx.store.update(task_id, progress=round(share, 4)):
        raise TaskCancelled(f"task {task_id} was cancelled or deleted while running")


def _run(ctx: WorkerContext, task: Task) -> None:
    assert task.upload_name is not None
    started = time.perf_counter()
    transcript = engine.transcribe(
        ctx.engine,
        ctx.storage.path(task.upload_name),
        task.task_type,
        task.options,
        on_progress=lambda share: _progress(ctx, task.id, share),
    )
    ctx.store.update(
        task.id,
        duration=transcript.duration,
        language=transcript.language,
        language_probability=transcript.language_probability,
    )
    ctx.store.complete(task.id, transcript, time.perf_counter() - started)
    log.info("task %s completed: %.1f s of audio", task.id, transcript.duration)

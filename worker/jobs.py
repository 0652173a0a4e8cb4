"""The job of a whole task, enqueued by dotted name (`worker.jobs.transcribe`); long files go to `chunk_jobs`."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

from shared import logs, metrics
from shared.enums import TaskStatus
from shared.errors import TaskNotFound, WhisperqError
from shared.fencing import Fence
from shared.schemas import Segment, Task, Transcript, check_model_fits
from shared.storage import volume_writes
from shared.store import run_fence
from worker import chunk_jobs, context, download, engine, speaker_stage
from worker.context import WorkerContext
from worker.control import TaskCancelled
from worker.deadline import deadline

log = logging.getLogger(__name__)

# The time limit for media whose container does not say how long it is.
UNKNOWN_DURATION_S = 3600.0


def transcribe(task_id: str) -> None:
    """Run one task: fetch its media if it is a URL, transcribe (or split) it, store the result, mark the outcome.

    A cold stop (`ColdStop`) passes through untouched: the task goes back on its queue with its media.
    """
    ctx = context.current()
    logs.current_task.set(task_id)
    task = _claim(ctx, task_id)
    if task is None:
        return
    try:
        with volume_writes():
            if task.source.kind == "url":
                with deadline(ctx.settings.job_timeout(ctx.settings.max_media_duration_s)):
                    task = _download(ctx, task)
            _run(ctx, task)
    except TaskCancelled as exc:
        log.info("%s", exc)
        ctx.lifecycle.release(task)
    except WhisperqError as exc:
        log.info("task %s failed: %s (%s)", task_id, exc.message, exc.code)
        ctx.lifecycle.fail(task, exc.code, exc.message, fences(task))
    except Exception as exc:
        message = f"the worker failed unexpectedly: {type(exc).__name__}: {exc}"
        ctx.lifecycle.fail(task, "internal_error", message, fences(task))
        raise


def _claim(ctx: WorkerContext, task_id: str) -> Task | None:
    """The task, now run by us (its `run` is our run's token); None if it is gone, not queued, or finished."""
    try:
        task = ctx.stores.tasks.get(task_id)
    except TaskNotFound:
        log.info("task %s no longer exists; skipping", task_id)
        return None
    status = TaskStatus.DOWNLOADING if task.source.kind == "url" else TaskStatus.PROCESSING
    run = 0 if task.status.finished else ctx.stores.tasks.start(task, ctx.worker_id, status)
    if not run:
        log.info("task %s is %s; skipping", task_id, task.status.value)
        return None
    return task.model_copy(update={"status": status, "worker": ctx.worker_id, "attempts": run, "run": run})


def fences(task: Task) -> list[Fence]:
    """The fence of the run this worker holds: its writes to the task count only while the run holds it."""
    return [run_fence(task.id, task.run)]


def _download(ctx: WorkerContext, task: Task) -> Task:
    """Fetch the task's URL onto the volume and record what was found there."""
    assert task.source.url is not None
    fetched = download.fetch(task.source.url, ctx.stores.storage, ctx.settings, _cancellation_check(ctx, task.id))
    metrics.count(ctx.redis, "upload_bytes", "download", fetched.size_bytes)
    source = task.source.model_copy(
        update={
            "platform": fetched.platform,
            "title": fetched.title,
            "format": fetched.format,
            "size_bytes": fetched.size_bytes,
        }
    )
    task = task.model_copy(update={"upload_name": fetched.upload_name, "source": source})
    if not ctx.stores.tasks.advance(
        task.id,
        TaskStatus.PROCESSING,
        fences=fences(task),
        upload_name=fetched.upload_name,
        source=source.model_dump(mode="json"),
        duration=fetched.duration,
    ):
        ctx.lifecycle.release(task)
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while downloading")
    return task


def _cancellation_check(ctx: WorkerContext, task_id: str, every_s: float = 1.0) -> download.Check:
    """A check, cheap to call often, that raises TaskCancelled once the task is cancelled or deleted."""
    last = time.monotonic()

    def check() -> None:
        nonlocal last
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            if not ctx.stores.tasks.active(task_id):
                raise TaskCancelled(f"task {task_id} was cancelled or deleted while downloading")

    return check


def _progress(ctx: WorkerContext, task: Task, share: float, segment: Segment) -> None:
    """Record progress and stream the segment; a task cancelled, deleted or given to another worker stops here."""
    if not ctx.stores.tasks.update(task.id, fences(task), progress=round(share, 4)):
        raise TaskCancelled(f"task {task.id} was cancelled, deleted or given to another worker while running")
    event = {"type": "segment", "progress": str(round(share, 4)), "segment": segment.model_dump_json()}
    ctx.stores.events.add(task.id, event, fences(task))


def _run(ctx: WorkerContext, task: Task) -> None:
    """Probe the media; split it if it is long, or else transcribe it and store the result."""
    assert task.upload_name is not None
    path = ctx.stores.storage.path(task.upload_name)
    duration = engine.probe(path, ctx.settings.max_media_duration_s)
    ctx.stores.tasks.update(task.id, fences(task), duration=duration)
    check_model_fits(ctx.engine.name, ctx.engine.multilingual, task.task_type, task.options.language)
    if _splits(ctx, task, duration):
        with deadline(ctx.settings.job_timeout(duration or UNKNOWN_DURATION_S)):
            chunk_jobs.split(ctx, task, path)
        return
    started = time.perf_counter()
    read = partial(speaker_stage.media_pieces, path, ctx.settings.max_media_duration_s)
    # A task's speaker turns are worked out beside its decode: they need only the audio.
    with speaker_stage.begun(ctx, task, read) if task.options.diarize else nullcontext() as turns:
        transcript = _transcript(ctx, task, path, duration, turns)
    processing = time.perf_counter() - started
    if ctx.lifecycle.complete(task, transcript, processing, fences(task)):
        log.info("task %s completed: %.1f s of audio", task.id, transcript.duration)
        metrics.observe_completion(ctx.redis, task.model, processing, transcript.duration)
    else:
        log.warning("task %s: result discarded, the task had finished or gone meanwhile", task.id)


def _transcript(
    ctx: WorkerContext, task: Task, path: Path, duration: float | None, turns: speaker_stage.Turns | None
) -> Transcript:
    """The task's words, decoded, with their speakers where it asked."""
    with deadline(ctx.settings.job_timeout(duration if duration is not None else UNKNOWN_DURATION_S)):
        transcript = engine.transcribe(
            ctx.engine,
            path,
            task.task_type,
            task.options,
            on_progress=lambda share, segment: _progress(ctx, task, share, segment),
        )
    ctx.stores.tasks.update(
        task.id,
        fences(task),
        duration=transcript.duration,
        language=transcript.language,
        language_probability=transcript.language_probability,
    )
    return transcript if turns is None else speaker_stage.label(ctx, task, transcript, turns, fences(task))


def _splits(ctx: WorkerContext, task: Task, duration: float | None) -> bool:
    """Long audio is split, unless the task picks its own clips or splitting is off."""
    threshold = ctx.settings.split_after_s
    return bool(threshold and duration and duration > threshold and not task.options.clip_timestamps)

"""RQ job functions, enqueued by dotted name (`worker.jobs.transcribe`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from shared import fleet, logs, metrics, queues, stitch
from shared.enums import TaskStatus
from shared.errors import TaskCancelled, TaskNotFound, WhisperqError
from shared.schemas import Chunk, Segment, Task, Transcript
from worker import context, download, engine, splitting
from worker.context import ColdStop, WorkerContext
from worker.deadline import deadline

log = logging.getLogger(__name__)

# The time limit for media whose container does not say how long it is.
UNKNOWN_DURATION_S = 3600.0


class ChunkTaken(Exception):
    """The chunk in hand was given to another worker (this one was taken for dead); its work here is dropped."""


def transcribe(task_id: str) -> None:
    """Run one task: fetch its media if it is a URL, transcribe it, store the result, mark the outcome."""
    ctx = context.current()
    logs.current_task.set(task_id)
    task = _claim(ctx, task_id)
    if task is None:
        return
    keep_upload = ctx.settings.keep_uploads
    try:
        if task.source.kind == "url":
            with deadline(ctx.settings.job_timeout(ctx.settings.max_media_duration_s)):
                task = _download(ctx, task)
        _run(ctx, task)
    except ColdStop:
        keep_upload = True  # the task goes back on its queue with its media
        raise
    except WhisperqError as exc:
        log.info("task %s failed: %s (%s)", task_id, exc.message, exc.code)
        ctx.store.fail(task_id, exc.code, exc.message)
    except Exception as exc:
        ctx.store.fail(task_id, "internal_error", f"the worker failed unexpectedly: {type(exc).__name__}: {exc}")
        raise
    finally:
        if task.upload_name and not keep_upload:
            ctx.storage.remove(task.upload_name)


def _claim(ctx: WorkerContext, task_id: str) -> Task | None:
    """The task, now marked as ours; None if it was deleted, cancelled or already finished."""
    try:
        task = ctx.store.get(task_id)
    except TaskNotFound:
        log.info("task %s no longer exists; skipping", task_id)
        return None
    status = TaskStatus.DOWNLOADING if task.source.kind == "url" else TaskStatus.PROCESSING
    if task.status.finished or not ctx.store.start(task, ctx.worker_id, status):
        log.info("task %s is %s; skipping", task_id, task.status.value)
        return None
    return task


def _download(ctx: WorkerContext, task: Task) -> Task:
    """Fetch the task's URL onto the volume and record what was found there."""
    assert task.source.url is not None
    fetched = download.fetch(task.source.url, ctx.storage, ctx.settings, _cancellation_check(ctx, task.id))
    metrics.count(ctx.store.redis, "upload_bytes", "download", fetched.size_bytes)
    source = task.source.model_copy(
        update={
            "platform": fetched.platform,
            "title": fetched.title,
            "format": fetched.format,
            "size_bytes": fetched.size_bytes,
        }
    )
    if not ctx.store.advance(
        task.id,
        TaskStatus.PROCESSING,
        upload_name=fetched.upload_name,
        source=source.model_dump(mode="json"),
        duration=fetched.duration,
    ):
        ctx.storage.remove(fetched.upload_name)
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while downloading")
    return task.model_copy(update={"upload_name": fetched.upload_name, "source": source})


def _cancellation_check(ctx: WorkerContext, task_id: str, every_s: float = 1.0) -> download.Check:
    """A check, cheap to call often, that raises TaskCancelled once the task is cancelled or deleted."""
    last = time.monotonic()

    def check() -> None:
        nonlocal last
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            if not ctx.store.active(task_id):
                raise TaskCancelled(f"task {task_id} was cancelled or deleted while downloading")

    return check


def _progress(ctx: WorkerContext, task_id: str, share: float, segment: Segment) -> None:
    """Record progress and stream the segment; a task cancelled or deleted meanwhile stops here."""
    if not ctx.store.update(task_id, progress=round(share, 4)):
        raise TaskCancelled(f"task {task_id} was cancelled or deleted while running")
    ctx.store.add_event(
        task_id, {"type": "segment", "progress": str(round(share, 4)), "segment": segment.model_dump_json()}
    )


def _run(ctx: WorkerContext, task: Task) -> None:
    """Probe the media; split it if it is long, or else transcribe it and store the result."""
    assert task.upload_name is not None
    path = ctx.storage.path(task.upload_name)
    duration = engine.probe(path)
    ctx.store.update(task.id, duration=duration)
    engine.check(ctx.engine, task.task_type, task.options)
    if _splits(ctx, task, duration):
        with deadline(ctx.settings.job_timeout(duration or UNKNOWN_DURATION_S)):
            _split(ctx, task, path)
        return
    started = time.perf_counter()
    with deadline(ctx.settings.job_timeout(duration if duration is not None else UNKNOWN_DURATION_S)):
        transcript = engine.transcribe(
            ctx.engine,
            path,
            task.task_type,
            task.options,
            on_progress=lambda share, segment: _progress(ctx, task.id, share, segment),
        )
    ctx.store.update(
        task.id,
        duration=transcript.duration,
        language=transcript.language,
        language_probability=transcript.language_probability,
    )
    processing = time.perf_counter() - started
    if ctx.store.complete(task.id, transcript, processing):
        _completed(ctx, task, transcript, processing)
    else:
        log.warning("task %s: result discarded, the task had finished or gone meanwhile", task.id)


def _completed(ctx: WorkerContext, task: Task, transcript: Transcript, processing: float) -> None:
    log.info("task %s completed: %.1f s of audio", task.id, transcript.duration)
    metrics.observe(ctx.store.redis, "processing_seconds", task.model, processing)
    if transcript.duration > 0:
        metrics.observe(ctx.store.redis, "real_time_factor", task.model, processing / transcript.duration)


def _splits(ctx: WorkerContext, task: Task, duration: float | None) -> bool:
    """Long audio is split, unless the task picks its own clips or splitting is off."""
    threshold = ctx.settings.split_after_s
    return bool(threshold and duration and duration > threshold and not task.options.clip_timestamps)


def _split(ctx: WorkerContext, task: Task, path: Path) -> None:
    """Cut the audio at silences, fix the language on the first chunk, and enqueue a job per chunk."""
    audio = splitting.decode(path)
    duration = len(audio) / splitting.SAMPLE_RATE
    spans = splitting.plan(splitting.speech_spans(audio), duration, ctx.settings.chunk_target_s)
    ctx.storage.remove_chunks(task.id)
    chunks = splitting.write_chunks(audio, spans, lambda index: ctx.storage.chunk_path(task.id, index))
    language, probability = task.options.language, 1.0
    if language is None:
        first = chunks[0]
        language, probability = engine.detect_language(ctx.engine, audio[: round(first.end * splitting.SAMPLE_RATE)])
    ctx.chunks.create(task.id, chunks, language, probability)
    fields = {"chunks": len(chunks), "duration": duration, "language": language, "language_probability": probability}
    if not ctx.store.update(task.id, expect_worker=ctx.worker_id, **fields):
        ctx.chunks.delete(task.id)
        ctx.storage.remove_chunks(task.id)
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while being split")
    _queue_more(ctx, task, len(chunks))
    log.info("task %s split into %d chunks of %.1f s of audio in all, in %s", task.id, len(chunks), duration, language)


def transcribe_chunk(task_id: str, index: int) -> None:
    """Run one chunk of a split task; the worker that finishes the last chunk stitches the result."""
    ctx = context.current()
    logs.current_task.set(task_id)
    if not ctx.chunks.claim(task_id, index, ctx.worker_id):
        log.info("chunk %d of task %s is done already, or its task has ended; skipping", index, task_id)
        if not ctx.store.active(task_id):
            ctx.storage.remove_chunks(task_id)
        return
    try:
        task = ctx.store.get(task_id)
        _run_chunk(ctx, task, index)
    except ChunkTaken as exc:
        log.warning("%s; leaving it", exc)
    except TaskNotFound:
        ctx.storage.remove_chunks(task_id)
    except WhisperqError as exc:
        log.info("task %s failed in chunk %d: %s (%s)", task_id, index, exc.message, exc.code)
        if ctx.store.fail(task_id, exc.code, exc.message):
            ctx.storage.remove_chunks(task_id)
    except Exception as exc:
        message = f"the worker failed unexpectedly on chunk {index}: {type(exc).__name__}: {exc}"
        ctx.store.fail(task_id, "internal_error", message)
        ctx.storage.remove_chunks(task_id)
        raise


def _run_chunk(ctx: WorkerContext, task: Task, index: int) -> None:
    split = ctx.chunks.load(task.id)
    if split is None:
        raise TaskNotFound(f"task {task.id} has no chunks")
    chunk = split.chunks[index].chunk
    options = task.options.model_copy(update={"language": split.language})
    with deadline(ctx.settings.job_timeout(chunk.duration)):
        transcript = engine.transcribe(
            ctx.engine,
            ctx.storage.chunk_path(task.id, index),
            task.task_type,
            options,
            on_progress=lambda _, segment: _chunk_progress(ctx, task, chunk, len(split.chunks), segment),
        )
    segments = [stitch.shift(segment, chunk) for segment in transcript.segments]
    done = ctx.chunks.finish(task.id, index, ctx.worker_id, segments, chunk.duration)
    if done is None:
        log.warning("task %s: chunk %d discarded, it was taken from this worker meanwhile", task.id, index)
        return
    log.info("task %s: chunk %d of %d done", task.id, index + 1, len(split.chunks))
    if done == len(split.chunks):
        _stitch(ctx, task)
    else:
        _queue_more(ctx, task, len(split.chunks))


def _queue_more(ctx: WorkerContext, task: Task, count: int) -> None:
    """Queue the next pending chunks, keeping one per live worker of the model queued or in hand."""
    want = fleet.worker_count(ctx.store.redis, task.model)
    queues.enqueue_chunks(ctx.store.redis, task, ctx.chunks.take(task.id, count, want), ctx.settings.task_ttl_s)


def _chunk_progress(ctx: WorkerContext, task: Task, chunk: Chunk, count: int, segment: Segment) -> None:
    """Record seconds done in this chunk and the share done over all chunks; stream the segment on the timeline."""
    total = ctx.chunks.progress(task.id, chunk.index, ctx.worker_id, min(segment.end, chunk.duration), count)
    if total is None and ctx.store.active(task.id):
        raise ChunkTaken(f"chunk {chunk.index} of task {task.id} was given to another worker")
    duration = task.duration or 0.0
    share = round(min(1.0, total / duration), 4) if total is not None and duration > 0 else 0.0
    if total is None or not ctx.store.update(task.id, progress=share):
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while running")
    placed = stitch.shift(segment, chunk)
    ctx.store.add_event(
        task.id,
        {"type": "segment", "progress": str(share), "chunk": str(chunk.index), "segment": placed.model_dump_json()},
    )


def _stitch(ctx: WorkerContext, task: Task) -> None:
    stitched = stitch.finish(task, ctx.store, ctx.chunks, ctx.storage)
    if stitched is None:
        log.warning("task %s: stitched result discarded, the task had finished or gone meanwhile", task.id)
        return
    _completed(ctx, task, *stitched)

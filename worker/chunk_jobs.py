"""Long files: the split, the chunk job (`worker.chunk_jobs.transcribe_chunk`), and the stitch after the last chunk."""

from __future__ import annotations

import logging
from pathlib import Path

from shared import fleet, logs, metrics, queues
from shared.errors import TaskNotFound, WhisperqError
from shared.schemas import Chunk, Segment, Task
from worker import context, engine, splitting, stitch
from worker.context import WorkerContext
from worker.control import ChunkTaken, TaskCancelled
from worker.deadline import deadline

log = logging.getLogger(__name__)


def split(ctx: WorkerContext, task: Task, path: Path) -> None:
    """Cut the audio at silences, fix the language on the first chunk, and queue the first chunks' jobs."""
    audio = splitting.decode(path)
    duration = len(audio) / splitting.SAMPLE_RATE
    spans = splitting.plan(splitting.speech_spans(audio), duration, ctx.settings.chunk_target_s)
    chunks = splitting.write_chunks(audio, spans, lambda index: ctx.stores.storage.chunk_path(task.id, index))
    language, probability = task.options.language, 1.0
    if language is None:
        first = chunks[0]
        language, probability = engine.detect_language(ctx.engine, audio[: round(first.end * splitting.SAMPLE_RATE)])
    ctx.stores.chunks.create(task.id, chunks, language, probability)
    fields = {
        "chunks": len(chunks),
        "chunk_spans": [[chunk.start, chunk.end] for chunk in chunks],
        "duration": duration,
        "language": language,
        "language_probability": probability,
    }
    if not ctx.stores.tasks.update(task.id, expect_worker=ctx.worker_id, **fields):
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while being split")
    _queue_more(ctx, task, len(chunks))
    log.info("task %s split into %d chunks of %.1f s of audio in all, in %s", task.id, len(chunks), duration, language)


def transcribe_chunk(task_id: str, index: int) -> None:
    """Run one chunk of a split task; the worker that finishes the last chunk stitches the result."""
    ctx = context.current()
    logs.current_task.set(task_id)
    try:
        task = ctx.stores.tasks.get(task_id)
    except TaskNotFound:
        log.info("task %s no longer exists; skipping chunk %d", task_id, index)
        return
    if not ctx.stores.chunks.claim(task_id, index, ctx.worker_id):
        log.info("chunk %d of task %s is done already, or its task has ended; skipping", index, task_id)
        ctx.lifecycle.release(task)
        return
    try:
        _run_chunk(ctx, task, index)
    except ChunkTaken as exc:
        log.warning("%s; leaving it", exc)
    except TaskCancelled as exc:
        log.info("%s", exc)
        ctx.lifecycle.release(task)
    except WhisperqError as exc:
        log.info("task %s failed in chunk %d: %s (%s)", task_id, index, exc.message, exc.code)
        ctx.lifecycle.fail(task, exc.code, exc.message)
    except Exception as exc:
        message = f"the worker failed unexpectedly on chunk {index}: {type(exc).__name__}: {exc}"
        ctx.lifecycle.fail(task, "internal_error", message)
        raise


def _run_chunk(ctx: WorkerContext, task: Task, index: int) -> None:
    split = ctx.stores.chunks.load(task.id)
    if split is None:
        raise TaskCancelled(f"task {task.id} has no chunks: it has ended")
    chunk = split.chunks[index].chunk
    options = task.options.model_copy(update={"language": split.language})
    with deadline(ctx.settings.job_timeout(chunk.duration)):
        transcript = engine.transcribe(
            ctx.engine,
            ctx.stores.storage.chunk_path(task.id, index),
            task.task_type,
            options,
            on_progress=lambda _, segment: _chunk_progress(ctx, task, chunk, len(split.chunks), segment),
        )
    segments = [stitch.shift(segment, chunk) for segment in transcript.segments]
    done = ctx.stores.chunks.finish(task.id, index, ctx.worker_id, segments, chunk.duration)
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
    want = fleet.worker_count(ctx.redis, task.model)
    queues.enqueue_chunks(ctx.redis, task, ctx.stores.chunks.take(task.id, count, want), ctx.settings.task_ttl_s)


def _chunk_progress(ctx: WorkerContext, task: Task, chunk: Chunk, count: int, segment: Segment) -> None:
    """Record seconds done in this chunk and the share done over all chunks; stream the segment on the timeline."""
    total = ctx.stores.chunks.progress(task.id, chunk.index, ctx.worker_id, min(segment.end, chunk.duration), count)
    if total is None and ctx.stores.tasks.active(task.id):
        raise ChunkTaken(f"chunk {chunk.index} of task {task.id} was given to another worker")
    duration = task.duration or 0.0
    share = round(min(1.0, total / duration), 4) if total is not None and duration > 0 else 0.0
    if total is None or not ctx.stores.tasks.update(task.id, progress=share):
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while running")
    placed = stitch.shift(segment, chunk)
    ctx.stores.events.add(
        task.id,
        {"type": "segment", "progress": str(share), "chunk": str(chunk.index), "segment": placed.model_dump_json()},
    )


def _stitch(ctx: WorkerContext, task: Task) -> None:
    stitched = stitch.finish(task, ctx.stores.chunks, ctx.lifecycle)
    if stitched is None:
        log.warning("task %s: stitched result discarded, the task had finished or gone meanwhile", task.id)
        return
    transcript, processing = stitched
    log.info("task %s completed: %.1f s of audio in %s chunks", task.id, transcript.duration, task.chunks)
    metrics.observe_completion(ctx.redis, task.model, processing, transcript.duration)

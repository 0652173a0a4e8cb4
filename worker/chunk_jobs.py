"""Long files: the split, the chunk job (`worker.chunk_jobs.transcribe_chunk`), and the stitch after the last chunk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import fleet, logs, metrics, queues
from shared.chunks import Split, chunk_fence
from shared.errors import TaskNotFound, WhisperqError
from shared.fencing import Fence
from shared.schemas import Chunk, Segment, Task
from shared.store import run_fence
from worker import context, engine, splitting, stitch
from worker.context import WorkerContext
from worker.control import ChunkTaken, TaskCancelled
from worker.deadline import deadline

log = logging.getLogger(__name__)


def split(ctx: WorkerContext, task: Task, path: Path) -> None:
    """Cut the audio at silences, fix the language on the first chunk, record the plan, queue the first chunks.

    The chunk audio goes in a folder of this run (`task.run`). Until the task has recorded the plan, that audio is
    this run's alone, so on any failure before then (a time limit, a full disk, a failed language detection, a
    cold stop, Redis away) the run removes it itself: nothing else would, and a newer run has its own folder.
    """
    assert task.run is not None
    try:
        chunks, fields = _cut(ctx, task, path)
        language, probability = fields["language"], fields["language_probability"]
        recorded = ctx.stores.chunks.create(task.id, chunks, language, probability, task.run)
        recorded = recorded and ctx.stores.tasks.update(task.id, [run_fence(task.id, task.run)], **fields)
    except BaseException:
        ctx.stores.storage.remove_chunks(task.id, task.run)
        raise
    if not recorded:
        ctx.stores.storage.remove_chunks(task.id, task.run)
        raise TaskCancelled(f"task {task.id} was cancelled, deleted or given to another worker while being split")
    _queue_more(ctx, task, len(chunks))
    duration = fields["duration"]
    log.info("task %s split into %d chunks of %.1f s of audio in all, in %s", task.id, len(chunks), duration, language)


def _cut(ctx: WorkerContext, task: Task, path: Path) -> tuple[list[Chunk], dict[str, Any]]:
    """The chunks, written to the volume, and the task's fields that describe them."""
    assert task.run is not None
    run = task.run
    audio = splitting.decode(path, ctx.settings.max_media_duration_s)
    duration = len(audio) / splitting.SAMPLE_RATE
    spans = splitting.plan(splitting.speech_spans(audio), duration, ctx.settings.chunk_target_s)
    chunks = splitting.write_chunks(audio, spans, lambda index: ctx.stores.storage.chunk_path(task.id, index, run))
    language, probability = task.options.language, 1.0
    if language is None:
        first = chunks[0]
        language, probability = engine.detect_language(ctx.engine, audio[: round(first.end * splitting.SAMPLE_RATE)])
    fields = {
        "duration": duration,
        "language": language,
        "language_probability": probability,
        "chunks": len(chunks),
        "chunk_spans": [[chunk.start, chunk.end] for chunk in chunks],
    }
    return chunks, fields


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


def transcribe_chunk(task_id: str, index: int) -> None:
    """Run one chunk of a split task; the worker that finishes the last chunk stitches the result."""
    ctx = context.current()
    logs.current_task.set(task_id)
    try:
        task = ctx.stores.tasks.get(task_id)
    except TaskNotFound:
        log.info("task %s no longer exists; skipping chunk %d", task_id, index)
        return
    attempt = ctx.stores.chunks.claim(task_id, index, ctx.worker_id)
    split = ctx.stores.chunks.load(task_id) if attempt else None
    if split is None:
        log.info("chunk %d of task %s is done or in hand already, or its task has ended; skipping", index, task_id)
        ctx.lifecycle.release(task)
        return
    run = ChunkRun(task, split, index, attempt)
    try:
        _run_chunk(ctx, run)
    except ChunkTaken as exc:
        log.warning("%s; leaving it", exc)
    except TaskCancelled as exc:
        log.info("%s", exc)
        ctx.lifecycle.release(task)
    except WhisperqError as exc:
        log.info("task %s failed in chunk %d: %s (%s)", task_id, index, exc.message, exc.code)
        ctx.lifecycle.fail(task, exc.code, exc.message, run.fences)
    except Exception as exc:
        message = f"the worker failed unexpectedly on chunk {index}: {type(exc).__name__}: {exc}"
        ctx.lifecycle.fail(task, "internal_error", message, run.fences)
        raise


def _run_chunk(ctx: WorkerContext, run: ChunkRun) -> None:
    task, chunk, count = run.task, run.chunk, len(run.split.chunks)
    options = task.options.model_copy(update={"language": run.split.language})
    with deadline(ctx.settings.job_timeout(chunk.duration)):
        transcript = engine.transcribe(
            ctx.engine,
            ctx.stores.storage.chunk_path(task.id, run.index, run.split.run),
            task.task_type,
            options,
            on_progress=lambda _, segment: _chunk_progress(ctx, run, segment),
        )
    segments = [stitch.shift(segment, chunk) for segment in transcript.segments]
    done = ctx.stores.chunks.finish(task.id, run.index, run.attempt, segments, chunk.duration)
    if done is None:
        log.warning("task %s: chunk %d discarded, it was taken from this worker meanwhile", task.id, run.index)
        return
    log.info("task %s: chunk %d of %d done", task.id, run.index + 1, count)
    if done == count:
        _stitch(ctx, task)
    else:
        _queue_more(ctx, task, count)


def _queue_more(ctx: WorkerContext, task: Task, count: int) -> None:
    """Queue the next pending chunks, keeping one per live worker of the model queued or in hand."""
    want = fleet.worker_count(ctx.redis, task.model)
    queues.enqueue_chunks(ctx.redis, task, ctx.stores.chunks.take(task.id, count, want), ctx.settings.task_ttl_s)


def _chunk_progress(ctx: WorkerContext, run: ChunkRun, segment: Segment) -> None:
    """Record seconds done in this chunk and the share done over all chunks; stream the segment on the timeline."""
    task, chunk = run.task, run.chunk
    seconds = min(segment.end, chunk.duration)
    total = ctx.stores.chunks.progress(task.id, run.index, run.attempt, seconds, len(run.split.chunks))
    if total is None and ctx.stores.tasks.active(task.id):
        raise ChunkTaken(f"chunk {chunk.index} of task {task.id} was given to another worker")
    duration = task.duration or 0.0
    share = round(min(1.0, total / duration), 4) if total is not None and duration > 0 else 0.0
    if total is None or not ctx.stores.tasks.update(task.id, run.fences, progress=share):
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while running")
    placed = stitch.shift(segment, chunk)
    event = {"type": "segment", "progress": str(share), "chunk": str(chunk.index), "segment": placed.model_dump_json()}
    ctx.stores.events.add(task.id, event, run.fences)


def _stitch(ctx: WorkerContext, task: Task) -> None:
    stitched = stitch.finish(task, ctx.stores.chunks, ctx.lifecycle)
    if stitched is None:
        log.warning("task %s: stitched result discarded, the task had finished or gone meanwhile", task.id)
        return
    transcript, processing = stitched
    log.info("task %s completed: %.1f s of audio in %s chunks", task.id, transcript.duration, task.chunks)
    metrics.observe_completion(ctx.redis, task.model, processing, transcript.duration)

"""Long files: the split, the chunk job (`worker.chunk_jobs.transcribe_chunk`), and the stitch after the last chunk."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np

from shared import fleet, logs, metrics, queues
from shared.errors import TaskNotFound, WhisperqError
from shared.fencing import Fence
from shared.schemas import Chunk, Segment, Task, Transcript
from shared.store import run_fence
from worker import batching, context, engine, speaker_stage, splitting, spooling, stitch, windows
from worker.chunk_runs import ChunkRun, take
from worker.context import WorkerContext
from worker.control import ChunkTaken, TaskCancelled
from worker.deadline import deadline

log = logging.getLogger(__name__)


def split(ctx: WorkerContext, task: Task, path: Path) -> None:
    """Cut the audio at silences as it is decoded, queueing each chunk once its cut is settled, so chunks are
    decoded while the split goes on; the language is fixed on the first chunk. Where there is no speech to decode,
    the task completes with an empty result.

    The chunk audio goes in a folder of this run (`task.run`). Until the plan is opened, that audio is this run's
    alone, so on any failure before then (a time limit, a full disk, a failed language detection, a cold stop, Redis
    away) the run removes it itself; so it does once the plan no longer holds (the task ended or went to another
    run). Otherwise other workers may be reading it: it goes when the task ends, as every run's chunks do.
    """
    assert task.run is not None
    cutting = _Cutting(ctx, task)
    raw = ctx.stores.storage.chunk_path(task.id, 0, task.run).with_name("audio.raw")
    settings = ctx.settings
    try:
        with speaker_stage.begun(ctx, task, cutting.pieces) if cutting.pieces else nullcontext() as turns:
            try:
                for spooled, plan in spooling.cut(
                    path, settings.max_media_duration_s, raw, settings.chunk_target_s, settings.chunk_pause_s
                ):
                    cutting.add(spooled, plan)
            finally:
                raw.unlink(missing_ok=True)
                if cutting.pieces:
                    cutting.pieces.end()
            if turns is not None:  # worked out from each chunk as it was cut, while others decoded them
                speaker_stage.keep(_turns_path(ctx, task.id, task.run), turns.result(), turns.seconds)
                log.info("task %s: speaker turns worked out while it was cut, in %.1f s", task.id, turns.seconds)
            cutting.close(spooled)
    except BaseException as exc:
        if not cutting.opened or isinstance(exc, TaskCancelled):
            ctx.stores.storage.remove_chunks(task.id, task.run)
        raise
    if cutting.complete:  # every chunk was done before the close, or there were none: the result is complete now
        _stitch(ctx, ctx.stores.tasks.get(task.id))
    count, seconds = len(cutting.chunks), spooled.duration
    log.info("task %s split into %d chunks of %.1f s of audio in all, in %s", task.id, count, seconds, cutting.language)


class _Cutting:
    """One run's split of a task as it goes: the chunks cut so far, recorded in the plan and queued as they come."""

    def __init__(self, ctx: WorkerContext, task: Task) -> None:
        assert task.run is not None
        self.ctx, self.task, self.run = ctx, task, task.run
        self.chunks: list[Chunk] = []
        # The chunks as they are cut, for the speaker turns where the task asked for them.
        self.pieces = speaker_stage.CutPieces() if task.options.diarize else None
        self.opened = False
        self.complete = False
        self.language: str | None = None

    def add(self, spooled: spooling.Spooled, plan: spooling.Plan) -> None:
        """Write the chunks of `plan` (the next settled ones), record them (opening the plan with the first) and
        queue as many as the fleet decodes at once."""
        stores, task = self.ctx.stores, self.task
        chunks = spooling.write_chunks(spooled, plan, self._path, first=len(self.chunks))
        if self.opened:
            recorded = stores.chunks.append(task.id, chunks, self.run)
        else:
            language, probability = self._language(spooled, chunks)
            self.language = language
            fields = {"language": language, "language_probability": probability}
            recorded = stores.chunks.create(task.id, chunks, language, probability, self.run)
            self.opened = recorded
            recorded = recorded and stores.tasks.update(task.id, [run_fence(task.id, self.run)], **fields)
        if not recorded:
            raise TaskCancelled(f"task {task.id} was cancelled, deleted or given to another worker while being split")
        self.chunks += chunks
        if chunks:
            _queue_more(self.ctx, task)
        if self.pieces:
            self.pieces.add([(chunk, self._path(chunk.index)) for chunk in chunks])

    def close(self, spooled: spooling.Spooled) -> None:
        """The last chunks are recorded (the plan is open: `add` ran for the end of the file, chunks or none): say
        what the file holds on the task, then close the plan."""
        stores, task = self.ctx.stores, self.task
        fields = {
            "duration": spooled.duration,
            "chunks": len(self.chunks),
            "chunk_spans": [[chunk.start, chunk.end] for chunk in self.chunks],
        }
        # The task says it is split before the plan closes: a split task's chunks are the janitor's to recover, and
        # an open plan whose split is lost takes the task back to its queue.
        fenced = stores.tasks.update(task.id, [run_fence(task.id, self.run)], **fields)
        complete = fenced and stores.chunks.close(task.id, self.run, spooled.duration)
        if complete is None or not fenced:
            raise TaskCancelled(f"task {task.id} was cancelled, deleted or given to another worker while being split")
        self.complete = complete

    def _path(self, index: int) -> Path:
        return self.ctx.stores.storage.chunk_path(self.task.id, index, self.run)

    def _language(self, spooled: spooling.Spooled, chunks: list[Chunk]) -> tuple[str, float]:
        """The task's language, or the one detected on the first chunk (with no chunk: on the file's start)."""
        if self.task.options.single_language is not None:
            return self.task.options.single_language, 1.0
        spans = chunks[0].spans if chunks else [(0.0, windows.WINDOW_S)]
        first = np.concatenate([spooled.read(a, b) for a, b in spans])
        return engine.detect_language(self.ctx.engine, first, self.task.options.allowed_languages)


def transcribe_chunk(task_id: str, index: int) -> None:
    """Run one chunk of a split task, with any waiting chunks that fit its batch; whoever finishes a task's last
    chunk stitches its result."""
    ctx = context.current()
    logs.current_task.set(task_id)
    first = take(ctx, task_id, index)
    if first is None:
        return
    runs = [run for run in [first, *batching.more(ctx, first)] if _active(ctx, run)]
    log.info("decoding a batch of %d windows: %s", len(runs), " ".join(f"{r.task.id}-{r.index}" for r in runs))
    try:
        decoded = _decode(ctx, runs)
    except WhisperqError as exc:
        for run in runs:
            _settle(ctx, run.task, run.fences, f"chunk {run.index}", partial(_raise, exc))
        return
    except Exception as exc:
        for run in runs:
            _fail(ctx, run.task, run.fences, f"chunk {run.index}", exc)
        raise
    for run, segments in zip(runs, decoded, strict=True):
        _settle(ctx, run.task, run.fences, f"chunk {run.index}", partial(_finish, ctx, run, segments))


def stitch_orphan(task_id: str) -> None:
    """Stitch a split task whose chunks are all done, for the worker that finished the last one and was lost before
    it could (the janitor queues this job)."""
    ctx = context.current()
    logs.current_task.set(task_id)
    try:
        task = ctx.stores.tasks.get(task_id)
    except TaskNotFound:
        return
    log.info("task %s: stitching it, for the worker that decoded its last chunk and was lost", task_id)
    _settle(ctx, task, [run_fence(task.id, task.run or 0)], "the stitch", partial(_stitch, ctx, task))


def _active(ctx: WorkerContext, run: ChunkRun) -> bool:
    """False, with the run let go, if its task was cancelled or deleted while the batch was being filled."""
    if ctx.stores.tasks.active(run.task.id):
        return True
    log.info("task %s ended before its chunk %d was decoded; dropped from the batch", run.task.id, run.index)
    ctx.lifecycle.release(run.task)
    return False


def window(ctx: WorkerContext, run: ChunkRun) -> windows.Window:
    """The chunk's audio, and how its task asks for it to be decoded."""
    path = ctx.stores.storage.chunk_path(run.task.id, run.index, run.split.run)
    options = run.task.options.model_copy(update={"language": run.split.language})
    samples = splitting.decode(path, windows.WINDOW_S + 1)
    return windows.Window(samples, run.task.task_type, run.split.language, options)


def _decode(ctx: WorkerContext, runs: list[ChunkRun]) -> list[list[Segment]]:
    """Every run's chunk decoded in one batch, under one time limit for them all."""
    batch = [window(ctx, run) for run in runs]
    with deadline(ctx.settings.job_timeout(sum(run.chunk.duration for run in runs))):
        return windows.decode(ctx.engine, batch)


def _settle(ctx: WorkerContext, task: Task, fences: list[Fence], part: str, step: Callable[[], None]) -> None:
    """Do a part of a task (a chunk after its decode, or the stitch), and record how it ended: done, taken,
    cancelled or failed; its writes count while `fences` hold."""
    logs.current_task.set(task.id)
    try:
        step()
    except ChunkTaken as exc:
        log.warning("%s; leaving it", exc)
    except TaskCancelled as exc:
        log.info("%s", exc)
        ctx.lifecycle.release(task)
    except WhisperqError as exc:
        log.info("task %s failed in %s: %s (%s)", task.id, part, exc.message, exc.code)
        ctx.lifecycle.fail(task, exc.code, exc.message, fences)
    except Exception as exc:
        _fail(ctx, task, fences, part, exc)
        raise


def _raise(exc: Exception) -> None:
    raise exc


def _fail(ctx: WorkerContext, task: Task, fences: list[Fence], part: str, exc: Exception) -> None:
    message = f"the worker failed unexpectedly on {part}: {type(exc).__name__}: {exc}"
    ctx.lifecycle.fail(task, "internal_error", message, fences)


def _finish(ctx: WorkerContext, run: ChunkRun, decoded: list[Segment]) -> None:
    """Stream the chunk's segments, store them, then queue the task's next chunks or stitch it."""
    task, chunk = run.task, run.chunk
    for segment in decoded:
        _chunk_progress(ctx, run, segment)
    segments = [stitch.shift(segment, chunk) for segment in decoded]
    last = ctx.stores.chunks.finish(task.id, run.index, run.attempt, segments, chunk.duration)
    if last is None:
        log.warning("task %s: chunk %d discarded, it was taken from this worker meanwhile", task.id, run.index)
        return
    log.info("task %s: chunk %d done", task.id, run.index + 1)
    if last:
        _stitch(ctx, task)
    else:
        _queue_more(ctx, task)


def _queue_more(ctx: WorkerContext, task: Task) -> None:
    """Queue the next pending chunks, keeping as many queued or in hand as the model's workers decode at once."""
    want = fleet.window_slots(ctx.redis, task.model)
    queues.enqueue_chunks(ctx.redis, task, ctx.stores.chunks.take(task.id, want), ctx.settings.task_ttl_s)


def _chunk_progress(ctx: WorkerContext, run: ChunkRun, segment: Segment) -> None:
    """Record seconds done in this chunk and the share done over all chunks; stream the segment on the timeline."""
    task, chunk = run.task, run.chunk
    seconds = chunk.place(segment.end) - chunk.start
    total = ctx.stores.chunks.progress(task.id, run.index, run.attempt, seconds)
    if total is None and ctx.stores.tasks.active(task.id):
        raise ChunkTaken(f"chunk {chunk.index} of task {task.id} was given to another worker")
    duration = task.duration or 0.0
    share = round(min(1.0, total / duration), 4) if total is not None and duration > 0 else 0.0
    if total is None or not ctx.stores.tasks.update(task.id, run.fences, progress=share):
        raise TaskCancelled(f"task {task.id} was cancelled or deleted while running")
    placed = stitch.shift(segment, chunk)
    event = {"type": "segment", "progress": str(share), "chunk": str(chunk.index), "segment": placed.model_dump_json()}
    ctx.stores.events.add(task.id, event, run.fences)


def _speakers(ctx: WorkerContext, task: Task) -> stitch.Finishing:
    """The speaker stage over the whole stitched file, reading its chunks from the volume: one set of labels."""

    def label(transcript: Transcript, plan: list[Chunk], run: int) -> Transcript:
        fences = [run_fence(task.id, run)]
        found = speaker_stage.kept(_turns_path(ctx, task.id, run))
        if found is not None:  # the split worked them out as it cut the file
            return speaker_stage.label(ctx, task, transcript, found, fences)
        chunks = [(chunk, ctx.stores.storage.chunk_path(task.id, chunk.index, run)) for chunk in plan]
        with speaker_stage.begun(ctx, task, partial(speaker_stage.chunk_pieces, chunks)) as turns:
            return speaker_stage.label(ctx, task, transcript, turns, fences)

    return label


def _turns_path(ctx: WorkerContext, task_id: str, run: int) -> Path:
    """Where a split keeps the speaker turns it worked out, beside its run's chunks."""
    return ctx.stores.storage.chunk_path(task_id, 0, run).with_name("turns.json")


def _stitch(ctx: WorkerContext, task: Task) -> None:
    stitched = stitch.finish(
        task, ctx.stores.chunks, ctx.lifecycle, _speakers(ctx, task) if task.options.diarize else None
    )
    if stitched is None:
        log.warning("task %s: stitched result discarded, the task had finished or gone meanwhile", task.id)
        return
    transcript, processing = stitched
    log.info("task %s completed: %.1f s of audio in %s chunks", task.id, transcript.duration, task.chunks)
    metrics.observe_completion(ctx.redis, task.model, processing, transcript.duration)

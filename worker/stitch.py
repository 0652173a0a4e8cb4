"""Stitching chunk transcripts back into one, on the original timeline."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from shared.chunks import ChunkStore
from shared.clock import utcnow
from shared.enums import TaskType
from shared.lifecycle import Lifecycle
from shared.schemas import Chunk, Segment, Task, Transcript
from shared.store import run_fence

# What a split task's result goes through after stitching: given the transcript, the plan and the run that made it.
Finishing = Callable[[Transcript, list[Chunk], int], Transcript] | None

# Whisper counts seek in mel frames of 10 ms.
FRAMES_PER_SECOND = 100


def shift(segment: Segment, chunk: Chunk) -> Segment:
    """A chunk's segment moved to the original timeline, kept inside its chunk so times never go back."""

    def place(t: float) -> float:
        return round(chunk.place(t), 3)

    words = None
    if segment.words is not None:
        words = [w.model_copy(update={"start": place(w.start), "end": place(w.end)}) for w in segment.words]
    return segment.model_copy(
        update={
            "seek": segment.seek + round(chunk.start * FRAMES_PER_SECOND),
            "start": place(segment.start),
            "end": place(segment.end),
            "words": words,
        }
    )


def stitch(
    task: TaskType,
    language: str,
    language_probability: float,
    duration: float,
    parts: Iterable[tuple[Chunk, Sequence[Segment]]],
) -> Transcript:
    """One transcript from the chunks' segments (already on the original timeline), in chunk order, ids from 1.

    The segments are the stitcher's own, just read: they are renumbered in place, not copied, so a long file's
    segments are in memory once.
    """
    segments: list[Segment] = []
    for _, chunk_segments in sorted(parts, key=lambda part: part[0].index):
        for segment in chunk_segments:
            segment.id = len(segments) + 1
            segments.append(segment)
    return Transcript(
        task=task,
        language=language,
        language_probability=language_probability,
        duration=duration,
        text="".join(segment.text for segment in segments).strip(),
        segments=segments,
    )


def finish(
    task: Task, chunks: ChunkStore, lifecycle: Lifecycle, then: Finishing = None
) -> tuple[Transcript, float] | None:
    """Stitch a split task whose chunks are all done and complete it (which releases its chunks).

    `then`, if given, turns the stitched transcript into the result, with the plan's chunks and the fences of the
    run that made it (the speaker stage). The completion is fenced by that run. Returns the transcript and the
    seconds from the split to now; None if a chunk is not done, or the task had ended or gone.
    """
    split = chunks.load(task.id)
    if split is None or split.finished < len(split.chunks):
        return None
    plan = [state.chunk for state in split.chunks]
    duration = task.duration or plan[-1].end  # the last chunk may end before the file does, in a pause left out
    transcript = stitch(
        task.task_type, split.language, split.language_probability, duration, chunks.segments(task.id, plan)
    )
    if then is not None:
        transcript = then(transcript, plan, split.run)
    processing = (utcnow() - (task.processing_at or utcnow())).total_seconds()
    completed = lifecycle.complete(task, transcript, processing, [run_fence(task.id, split.run)])
    return (transcript, processing) if completed else None

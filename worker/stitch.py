"""Stitching chunk transcripts back into one, on the original timeline."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pydantic import TypeAdapter

from shared.chunks import ChunkStore
from shared.clock import utcnow
from shared.enums import TaskType
from shared.lifecycle import Lifecycle
from shared.schemas import Chunk, RenderedTranscript, Segment, Task, Transcript
from shared.store import run_fence

# What a split task's result goes through after stitching: given the transcript, the plan and the run that made it.
Finishing = Callable[[Transcript, list[Chunk], int], Transcript] | None

_SEGMENTS = TypeAdapter(list[Segment])

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


def rendered(
    task: TaskType,
    language: str,
    language_probability: float,
    duration: float,
    parts: Iterable[tuple[Chunk, Sequence[Segment]]],
) -> RenderedTranscript:
    """`stitch`'s transcript written as its JSON a chunk at a time, the same bytes as its `model_dump_json()`: the
    segments of one chunk are objects at a time, the rest is text (a two-hour file's 6,000 segments peak at 8 MiB,
    where their objects and their JSON took 24 MiB). The parts come in chunk order."""
    texts: list[str] = []
    written: list[str] = []  # each chunk's segments as JSON, a comma before all but the first
    count = 0
    last = -1
    for chunk, chunk_segments in parts:
        assert chunk.index > last, "the chunks' segments come in chunk order"
        last = chunk.index
        for segment in chunk_segments:
            count += 1
            segment.id = count
            texts.append(segment.text)
        if chunk_segments:
            listed = _SEGMENTS.dump_json(list(chunk_segments)).decode()
            written.append(("," if written else "") + listed[1:-1])  # without the list's brackets
    head = Transcript(
        task=task,
        language=language,
        language_probability=language_probability,
        duration=duration,
        text="".join(texts).strip(),
        segments=[],
    ).model_dump_json()
    # A quote inside the text is escaped, so the one `"segments":[]` is the field's.
    before, after = head.split('"segments":[]', 1)
    return RenderedTranscript("".join([before, '"segments":[', *written, "]", after]), duration)


def finish(
    task: Task, chunks: ChunkStore, lifecycle: Lifecycle, then: Finishing = None
) -> tuple[Transcript | RenderedTranscript, float] | None:
    """Stitch a split task whose plan is closed with every chunk done, and complete it (which releases its chunks).

    `then`, if given, turns the stitched transcript into the result, with the plan's chunks and the fences of the
    run that made it (the speaker stage). The completion is fenced by that run. Returns the transcript and the
    seconds from the split to now; None if the plan is open or a chunk is not done, or the task had ended or gone.
    """
    split = chunks.load(task.id)
    if split is None or split.duration is None or not split.complete:
        return None
    plan = [state.chunk for state in split.chunks]
    duration = split.duration
    parts = chunks.segments(task.id, plan)
    transcript: Transcript | RenderedTranscript
    if then is None:
        transcript = rendered(task.task_type, split.language, split.language_probability, duration, parts)
    else:  # the speaker stage works on the objects
        transcript = then(
            stitch(task.task_type, split.language, split.language_probability, duration, parts), plan, split.run
        )
    processing = (utcnow() - (task.processing_at or utcnow())).total_seconds()
    completed = lifecycle.complete(task, transcript, processing, [run_fence(task.id, split.run)])
    return (transcript, processing) if completed else None

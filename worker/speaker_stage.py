"""The speaker stage of a task that asked for labels: after its words are decoded, who spoke them.

The voice encoder loads once per worker, on the first task that asks. The stage shows on the task (`stage`,
`diarization_seconds`) and in its events, and `/metrics` times it. Audio is read in pieces: a short file streamed
from the volume a minute at a time, a long file's chunks one by one, so the stage never holds the whole waveform.
"""

from __future__ import annotations

import logging
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from shared import metrics
from shared.errors import SpeakersUnavailable
from shared.fencing import Fence
from shared.schemas import Chunk, Task, Transcript
from worker import speakers, splitting
from worker.context import WorkerContext
from worker.control import TaskCancelled
from worker.deadline import deadline
from worker.diarization import Diarizer, Piece
from worker.engine import Engine

log = logging.getLogger(__name__)

PIECE_S = 60.0
STAGE = "diarizing"

_loaded: Diarizer | None = None
_loading = threading.Lock()


def diarizer(engine: Engine) -> Diarizer:
    """This worker's voice encoder, loaded on first use, on the engine's device and its share of the CPU threads."""
    global _loaded
    with _loading:
        if _loaded is None:
            started = time.perf_counter()
            try:
                _loaded = Diarizer(engine.device, engine.cpu_threads)
            except ModuleNotFoundError as exc:
                raise SpeakersUnavailable(
                    f"this worker cannot label speakers: {exc}; install it with the `speakers` extra"
                ) from exc
            log.info("speaker encoder loaded on %s in %.1f s", engine.device, time.perf_counter() - started)
        return _loaded


def label(
    ctx: WorkerContext,
    task: Task,
    transcript: Transcript,
    read: Callable[[], Iterator[Piece]],
    fences: Sequence[Fence],
) -> Transcript:
    """The transcript with speakers, the stage announced on the task and its time recorded. `read` gives the audio
    in pieces, each time it is called (once, or twice where more than one speaker is found)."""
    if not ctx.stores.tasks.update(task.id, fences, stage=STAGE):
        raise TaskCancelled(f"task {task.id} was cancelled, deleted or given to another worker before its speakers")
    ctx.stores.events.add(task.id, {"type": "stage", "stage": STAGE}, fences)
    started = time.perf_counter()
    options = task.options
    with deadline(ctx.settings.job_timeout(transcript.duration)):
        turns = diarizer(ctx.engine).turns_of(read, options.num_speakers, options.min_speakers, options.max_speakers)
    labelled = speakers.attach(transcript, turns, _tokenize(ctx.engine, task, transcript.language))
    seconds = time.perf_counter() - started
    ctx.stores.tasks.update(task.id, fences, diarization_seconds=round(seconds, 3))
    metrics.observe(ctx.redis, "diarization_seconds", task.model, seconds)
    found = len(labelled.speakers or [])
    log.info(
        "task %s: %d speakers in %.1f s of audio, labelled in %.1f s", task.id, found, transcript.duration, seconds
    )
    return labelled


def media_pieces(path: Path, max_s: float) -> Iterator[Piece]:
    """A media file decoded a minute at a time."""
    held: list[np.ndarray] = []
    offset, size = 0.0, 0
    for block in splitting.pcm_blocks(path, max_s):
        held.append(block)
        size += len(block)
        if size >= PIECE_S * splitting.SAMPLE_RATE:
            yield Piece(offset, _floats(held))
            offset += size / splitting.SAMPLE_RATE
            held, size = [], 0
    if held:
        yield Piece(offset, _floats(held))


def chunk_pieces(chunks: Sequence[tuple[Chunk, Path]]) -> Iterator[Piece]:
    """A split file's chunks, read one at a time from the volume."""
    for chunk, path in chunks:
        with wave.open(str(path), "rb") as audio:
            samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        at = 0
        for start, end in chunk.spans:  # a chunk's audio may be several stretches of the recording, joined
            size = round((end - start) * splitting.SAMPLE_RATE)
            yield Piece(start, samples[at : at + size])
            at += size


def _floats(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks).astype(np.float32) / 32768.0


def _tokenize(engine: Engine, task: Task, language: str) -> speakers.Tokenize:
    from faster_whisper.tokenizer import Tokenizer

    tokenizer = Tokenizer(
        engine.model.hf_tokenizer,
        engine.multilingual,
        task=task.task_type.value,
        language=language if engine.multilingual else "en",
    )
    return lambda text: list(tokenizer.encode(text))

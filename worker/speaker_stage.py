"""The speaker stage of a task that asked for labels: who spoke its words.

Who spoke when needs only the audio, so a short file's speaker turns are worked out on a thread of their own while
its words are decoded (`Turns`): on a machine with a core to spare, they cost the task little time; the words then
take the speakers of the turns (`label`). A split file's turns are worked out by its split, from each chunk as it
is cut (`CutPieces`), while other copies of the model decode the chunks, and kept beside them for the stitch
(`keep`, `kept`). The voice encoder loads once per worker, on the first task that asks. The stage shows on the task
(`stage`, `diarization_seconds`) and in its events, and `/metrics` times it. Audio is read in pieces: a short file
streamed from the volume a minute at a time, a long file's chunks one by one, so the stage never holds the whole
waveform.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
from worker.diarization import Diarizer, Piece, Turn
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


Reader = Callable[[], Iterator[Piece]]  # gives the audio in pieces, each time it is called


class Stopped(Exception):
    """The task's turns are no longer wanted (it failed, was cancelled, or ran out of time)."""


class Turns:
    """A task's speaker turns, worked out on a thread of their own from the moment this is made. The thread takes
    the niceness of the one that makes it (the priority lane's, or a replica's), and stops at the next piece of audio
    once `stop` is called."""

    def __init__(self, work: Callable[[Reader], list[Turn]], read: Reader):
        """`work` turns a reader of the audio's pieces into turns."""
        self.seconds = 0.0  # the time the work took, once done
        self._stopped = threading.Event()
        self._done = threading.Event()
        self._turns: list[Turn] = []
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(work, read), name="speaker-turns", daemon=True).start()

    def result(self) -> list[Turn]:
        """The turns, once worked out (waiting in short steps, so a deadline can interrupt); the work's error, if
        it failed."""
        while not self._done.wait(0.2):
            pass
        if self._error is not None:
            raise self._error
        return self._turns

    def stop(self) -> None:
        self._stopped.set()

    def _run(self, work: Callable[[Reader], list[Turn]], read: Reader) -> None:
        started = time.perf_counter()
        try:
            self._turns = work(lambda: self._unless_stopped(read()))
        except BaseException as exc:  # raised again in the thread that asks for the result
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started
            self._done.set()

    def _unless_stopped(self, pieces: Iterator[Piece]) -> Iterator[Piece]:
        for piece in pieces:
            if self._stopped.is_set():
                raise Stopped("the task's speaker turns are no longer wanted")
            yield piece


class Found:
    """Turns worked out already (by a split file's split), and the time that took."""

    def __init__(self, turns: list[Turn], seconds: float) -> None:
        self.turns, self.seconds = turns, seconds

    def result(self) -> list[Turn]:
        return self.turns


def keep(path: Path, turns: list[Turn], seconds: float) -> None:
    """Write a split file's turns where its stitch finds them (`kept`)."""
    payload = {"seconds": seconds, "turns": [[turn.start, turn.end, turn.speaker] for turn in turns]}
    path.write_text(json.dumps(payload))


def kept(path: Path) -> Found | None:
    """The turns a split kept at `path`; None if it kept none."""
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    return Found([Turn(start, end, speaker) for start, end, speaker in payload["turns"]], payload["seconds"])


class CutPieces:
    """A reader of a split file's chunks as its split cuts them: it waits for each next chunk until the split says
    it is done (`end`); read again, it gives them all."""

    def __init__(self) -> None:
        self._chunks: list[tuple[Chunk, Path]] = []
        self._ended = False
        self._changed = threading.Condition()

    def add(self, chunks: Sequence[tuple[Chunk, Path]]) -> None:
        with self._changed:
            self._chunks.extend(chunks)
            self._changed.notify_all()

    def end(self) -> None:
        """No more chunks come (the split is done, or failed)."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def __call__(self) -> Iterator[Piece]:
        read = 0
        while True:
            with self._changed:
                self._changed.wait_for(lambda seen=read: seen < len(self._chunks) or self._ended)  # type: ignore[misc]
                new = self._chunks[read:]
            if not new:
                return
            read += len(new)
            yield from chunk_pieces(new)


@contextmanager
def begun(ctx: WorkerContext, task: Task, read: Reader) -> Iterator[Turns]:
    """The task's speaker turns, begun now and stopped when the block ends; `read` is called once, or twice where
    more than one speaker is found."""
    options = task.options

    def work(pieces: Reader) -> list[Turn]:
        return diarizer(ctx.engine).turns_of(pieces, options.num_speakers, options.min_speakers, options.max_speakers)

    turns = Turns(work, read)
    try:
        yield turns
    finally:
        turns.stop()


def label(
    ctx: WorkerContext, task: Task, transcript: Transcript, turns: Turns | Found, fences: Sequence[Fence]
) -> Transcript:
    """The transcript with speakers, once its turns are worked out: the stage announced on the task, and its time
    recorded (the turns' own time and the words' labelling, whether or not the turns were worked out beside the
    decode)."""
    if not ctx.stores.tasks.update(task.id, fences, stage=STAGE):
        raise TaskCancelled(f"task {task.id} was cancelled, deleted or given to another worker before its speakers")
    ctx.stores.events.add(task.id, {"type": "stage", "stage": STAGE}, fences)
    waited = time.perf_counter()
    with deadline(ctx.settings.job_timeout(transcript.duration)):
        found = turns.result()
    attaching = time.perf_counter()
    labelled = speakers.attach(transcript, found, _tokenize(ctx.engine, task, transcript.language))
    now = time.perf_counter()
    seconds = turns.seconds + now - attaching
    ctx.stores.tasks.update(task.id, fences, diarization_seconds=round(seconds, 3))
    metrics.observe(ctx.redis, "diarization_seconds", task.model, seconds)
    log.info(
        "task %s: %d speakers in %.1f s of audio, labelled in %.1f s (%.1f s after its words)",
        task.id,
        len(labelled.speakers or []),
        transcript.duration,
        seconds,
        now - waited,
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

"""A long file decoded as a stream onto the volume, scored by Silero as it goes, so memory stays flat.

The worker that splits a long file never holds its audio: each decoded block is appended to a raw 16-bit file
beside the chunks and scored by Silero VAD (its recurrent state carried from block to block, so the scores equal
a whole-file pass), and the chunks are then cut from that file, read a chunk at a time. What stays in memory is one
block and one score per 32-ms frame (225,000 floats for two hours).
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.schemas import Chunk
from worker import splitting
from worker.streaming import FRAME, SpeechFrames

RATE = splitting.SAMPLE_RATE

# As splitting.speech_spans asks of faster-whisper's Silero VAD: pauses of 0.15 s count, speech padded by 30 ms.
_THRESHOLD = 0.5
_NEG_THRESHOLD = _THRESHOLD - 0.15
_MIN_SILENCE = RATE * splitting.MIN_SILENCE_MS // 1000
_PAD = RATE * splitting.SPEECH_PAD_MS // 1000


@dataclass(frozen=True)
class Spooled:
    """A decoded file on the volume: its raw samples, their count, and Silero's score of each frame."""

    raw: Path
    samples: int
    scores: np.ndarray

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.samples / RATE

    def read(self, start_s: float, end_s: float) -> np.ndarray:
        """The float samples between two times, read from the volume."""
        return self.pcm(start_s, end_s).astype(np.float32) / 32768.0

    def pcm(self, start_s: float, end_s: float) -> np.ndarray:
        """The 16-bit samples between two times, read from the volume.

        Read, not mapped: pages of a mapped file count in the worker's resident memory as they are touched, so
        cutting a two-hour file through a map held most of its 230 MB there.
        """
        first = min(max(0, round(start_s * RATE)), self.samples)
        last = min(max(first, round(end_s * RATE)), self.samples)
        with self.raw.open("rb") as raw:
            raw.seek(2 * first)
            return np.frombuffer(raw.read(2 * (last - first)), dtype="<i2")


def spool(media: Path, max_s: float, raw: Path) -> Spooled:
    """Decode the media into `raw` block by block, scoring speech on the way."""
    frames = SpeechFrames()
    scores, samples = [], 0
    raw.parent.mkdir(parents=True, exist_ok=True)
    with raw.open("wb") as out:
        for block in splitting.pcm_blocks(media, max_s):
            out.write(block.astype("<i2").tobytes())
            samples += len(block)
            scores.append(frames.feed(block.astype(np.float32) / 32768.0))
    # faster-whisper pads the audio with zeros to the next whole frame, and by a whole frame when none is partial.
    scores.append(frames.feed(np.zeros(FRAME - samples % FRAME, np.float32)))
    return Spooled(raw, samples, np.concatenate(scores) if scores else np.zeros(0, np.float32))


def speech_spans(scores: Any, samples: int) -> list[splitting.Span]:
    """Where the scores say there is speech, in seconds: faster-whisper's get_speech_timestamps rules, as used
    by splitting.speech_spans (no shortest speech, no longest), on scores computed elsewhere."""
    spans: list[list[int]] = []
    start, silence_from = None, 0
    for index, score in enumerate(scores):
        at = FRAME * index
        if score >= _THRESHOLD:
            silence_from = 0
            if start is None:
                start = at
            continue
        if start is not None and score < _NEG_THRESHOLD:
            silence_from = silence_from or at
            if at - silence_from >= _MIN_SILENCE:
                spans.append([start, silence_from])
                start, silence_from = None, 0
    if start is not None:
        spans.append([start, samples])
    return [(a / RATE, b / RATE) for a, b in _padded(spans, samples)]


def _padded(spans: list[list[int]], samples: int) -> list[list[int]]:
    """Each span widened by the padding, or by half the pause where the pause is shorter than two paddings."""
    for index, span in enumerate(spans):
        if index == 0:
            span[0] = max(0, span[0] - _PAD)
        if index == len(spans) - 1:
            span[1] = min(samples, span[1] + _PAD)
            continue
        following = spans[index + 1]
        gap = following[0] - span[1]
        if gap < 2 * _PAD:
            span[1] += gap // 2
            following[0] = max(0, following[0] - gap // 2)
        else:
            span[1] = min(samples, span[1] + _PAD)
            following[0] = max(0, following[0] - _PAD)
    return spans


def plan(spooled: Spooled, target_s: float, pause_s: float) -> list[list[splitting.Span]]:
    """The chunks to cut from a spooled file, as `splitting.squeezed_plan` places them on its speech."""
    speech = speech_spans(spooled.scores, spooled.samples)
    return splitting.squeezed_plan(speech, spooled.duration, target_s, pause_s, spooled.scores)


def write_chunks(
    spooled: Spooled, plan: Sequence[Sequence[splitting.Span]], path_of: Callable[[int], Path]
) -> list[Chunk]:
    """Write each chunk of the plan (the stretches its audio is made of) as a 16-bit mono WAV file at
    `path_of(index)`, its stretches joined; the chunks, in order."""
    chunks = []
    for index, spans in enumerate(plan):
        path = path_of(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            for start, end in spans:
                out.writeframes(spooled.pcm(start, end).tobytes())
        pieces = [(round(a, 3), round(b, 3)) for a, b in spans]
        start, end = pieces[0][0], pieces[-1][1]
        chunks.append(Chunk(index=index, start=start, end=end, pieces=pieces if len(pieces) > 1 else None))
    return chunks

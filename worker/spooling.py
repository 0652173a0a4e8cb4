"""A long file decoded as a stream onto the volume, scored by Silero as it goes, so memory stays flat.

The worker that splits a long file never holds its audio: each decoded block is appended to a raw 16-bit file
beside the chunks and scored by Silero VAD (its recurrent state carried from block to block, so the scores equal
a whole-file pass). After each block, the chunks whose cuts that audio settles are cut from the file, read a chunk
at a time, and handed on to be decoded while the rest is read. What stays in memory is one block and the scores
since the speech the last cut fell in (a whole-file pass would hold 225,000 floats for two hours).
"""

from __future__ import annotations

import bisect
import math
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.schemas import Chunk
from worker import splitting
from worker.streaming import FRAME, SpeechFrames

RATE = splitting.SAMPLE_RATE

# A plan: each chunk as the stretches of the original timeline its audio is made of.
Plan = list[list[splitting.Span]]

# As splitting.speech_spans asks of faster-whisper's Silero VAD: pauses of 0.15 s count, speech padded by 30 ms.
_THRESHOLD = 0.5
_NEG_THRESHOLD = _THRESHOLD - 0.15
_MIN_SILENCE = RATE * splitting.MIN_SILENCE_MS // 1000
_PAD = RATE * splitting.SPEECH_PAD_MS // 1000


@dataclass(frozen=True)
class Spooled:
    """A decoded file on the volume: its raw samples, their count so far, and (from `spool`, not `cut`) Silero's score
    of each frame."""

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
    """Decode the media into `raw` block by block, scoring every frame on the way (the whole file's scores)."""
    counted = list(_scored(media, max_s, raw))
    return Spooled(raw, counted[-1][0], np.concatenate([scores for _, scores in counted]))


def cut(media: Path, max_s: float, raw: Path, target_s: float, pause_s: float) -> Iterator[tuple[Spooled, Plan]]:
    """Decode the media into `raw` block by block, scoring speech on the way; after each block, the chunks of the
    plan whose cuts are settled (at the end, the rest), to be read from `raw` while the decode goes on."""
    cutter, samples = Cutter(target_s, pause_s), 0
    for samples, block_scores in _scored(media, max_s, raw):
        settled = cutter.feed(block_scores)
        if settled:
            yield Spooled(raw, samples, np.zeros(0, np.float32)), settled
    yield Spooled(raw, samples, np.zeros(0, np.float32)), cutter.finish(samples)


def _scored(media: Path, max_s: float, raw: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Each decoded block appended to `raw` (flushed, so it can be read at once): the samples so far, and the
    scores of the frames it completed. The last scores are those of the final frame, padded."""
    frames, samples = SpeechFrames(), 0
    raw.parent.mkdir(parents=True, exist_ok=True)
    with raw.open("wb") as out:
        for block in splitting.pcm_blocks(media, max_s):
            out.write(block.astype("<i2").tobytes())
            out.flush()
            samples += len(block)
            yield samples, frames.feed(block.astype(np.float32) / 32768.0)
    # faster-whisper pads the audio with zeros to the next whole frame, and by a whole frame when none is partial.
    yield samples, frames.feed(np.zeros(FRAME - samples % FRAME, np.float32))


def speech_spans(scores: Any, samples: int) -> list[splitting.Span]:
    """Where the scores say there is speech, in seconds: faster-whisper's get_speech_timestamps rules, as used
    by splitting.speech_spans (no shortest speech, no longest), on scores computed elsewhere."""
    spans = _Spans()
    spans.feed(scores)
    return [(a / RATE, b / RATE) for a, b in _padded(spans.found(samples), samples)]


class _Spans:
    """The speech spans (in samples, unpadded) of scores fed as they come: those closed, and the one still open."""

    def __init__(self) -> None:
        self.closed: list[list[int]] = []
        self.frames = 0
        self._start: int | None = None
        self._silence_from = 0

    def feed(self, scores: Any) -> None:
        for score in scores:
            at = FRAME * self.frames
            self.frames += 1
            if score >= _THRESHOLD:
                self._silence_from = 0
                if self._start is None:
                    self._start = at
                continue
            if self._start is not None and score < _NEG_THRESHOLD:
                self._silence_from = self._silence_from or at
                if at - self._silence_from >= _MIN_SILENCE:
                    self.closed.append([self._start, self._silence_from])
                    self._start, self._silence_from = None, 0

    def found(self, samples: int) -> list[list[int]]:
        """Copies of the spans kept, with the open one ending at `samples`."""
        spans = [list(span) for span in self.closed]
        return spans + ([[self._start, samples]] if self._start is not None else [])

    def drop(self, count: int) -> None:
        """Forget the first `count` closed spans."""
        del self.closed[:count]


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


class Cutter:
    """The chunks of `splitting.squeezed_plan`, cut as the scores of the audio come: each once no audio still to come
    can move its cut, so it can be decoded while the rest of the file is read. The plan goes on from the last cut
    over the audio since the speech it fell in or after (the pause the cut lies in is shortened as the whole file's
    would be); only the scores and spans from there on are kept."""

    # The end of speech still open when the scores stop may yet fall this far back (a pause of 0.15 s closes it).
    _OPEN_S = 0.5

    def __init__(self, target_s: float, pause_s: float) -> None:
        self.target_s, self.pause_s = target_s, pause_s
        self._spans = _Spans()
        self._scores = np.zeros(0, np.float32)
        self._origin = 0  # the frame the kept scores start at: the timeline the plan goes on over starts there
        self._cut = 0.0  # where the next chunk begins, in seconds

    def feed(self, scores: np.ndarray) -> Plan:
        """Take the scores of the next frames; the chunks now settled, in order (often none)."""
        self._spans.feed(scores)
        self._scores = np.concatenate([self._scores, scores])
        return self._take(self._spans.frames * FRAME, final=False)

    def finish(self, samples: int) -> Plan:
        """The rest of the chunks, the file having `samples` samples in all."""
        return self._take(samples, final=True)

    def _take(self, samples: int, final: bool) -> Plan:
        origin = self._origin * FRAME / RATE
        speech = [(a / RATE - origin, b / RATE - origin) for a, b in _padded(self._spans.found(samples), samples)]
        known = samples / RATE - origin
        settled = math.inf if final else min(known - self._OPEN_S, speech[-1][1] if speech else known)
        chunks = splitting.squeezed_plan(
            speech, known, self.target_s, self.pause_s, self._scores, settled, self._cut - origin
        )
        placed = [[(round(a + origin, 3), round(b + origin, 3)) for a, b in chunk] for chunk in chunks]
        if placed and not final:
            self._move_to(placed[-1][-1][1])
        return placed

    def _move_to(self, cut: float) -> None:
        """Go on from `cut`: keep the spans and scores from the last speech that starts at or before it."""
        self._cut = cut
        starts = [start - _PAD for start, _ in self._spans.found(round(cut * RATE))]
        anchor = bisect.bisect_right(starts, cut * RATE) - 1
        if anchor < 0:
            return
        self._spans.drop(min(anchor, len(self._spans.closed)))
        origin = max(0, starts[anchor]) // FRAME
        self._scores = self._scores[origin - self._origin :]
        self._origin = origin


def write_chunks(
    spooled: Spooled, plan: Sequence[Sequence[splitting.Span]], path_of: Callable[[int], Path], first: int = 0
) -> list[Chunk]:
    """Write each chunk of the plan (the stretches its audio is made of) as a 16-bit mono WAV file at
    `path_of(index)`, its stretches joined, numbered from `first`; the chunks, in order."""
    chunks = []
    for index, spans in enumerate(plan, start=first):
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

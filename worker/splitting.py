"""Cutting long audio at silences into chunks that any worker can transcribe on its own."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from shared.errors import MediaTooLong, NoAudioStream, UnsupportedMedia

SAMPLE_RATE = 16_000

# Silero VAD settings for finding cut points: pauses of 0.3 s count, and speech keeps 0.1 s of
# padding each side, so a cut lies at least 0.15 s from anything the VAD heard as speech.
MIN_SILENCE_MS = 150
SPEECH_PAD_MS = 30

# A chunk ends in a pause past this share of the target if there is one, so most chunks fill a Whisper window,
# and no sooner than the second share where there is none.
_FULL = 0.8
_SHORTEST = 0.5
# With no pause at all, a chunk ends at the quietest frame of its last seconds.
_FORCED_REACH_S = 2.0

Span = tuple[float, float]


def decode(path: Path, max_s: float) -> Any:
    """The media's first audio track as 16 kHz mono float32 samples; MediaTooLong past `max_s` seconds.

    As faster-whisper decodes (16-bit mono, timestamps ignored), but it stops at the limit whatever the container
    claims: a small file of long compressed silence cannot fill the worker's memory.
    """
    import numpy as np

    blocks = list(pcm_blocks(path, max_s))
    pcm = np.concatenate(blocks) if blocks else np.zeros(0, np.int16)
    return pcm.astype(np.float32) / 32768.0


def pcm_blocks(path: Path, max_s: float) -> Iterator[Any]:
    """The media's first audio track as blocks of 16 kHz mono 16-bit samples, decoded as they are asked for.

    Only one block is in memory at a time; MediaTooLong once the blocks pass `max_s` seconds.
    """
    import av

    limit, total = round(max_s * SAMPLE_RATE), 0
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NoAudioStream("the media holds no audio stream")
            for group in itertools.chain(_grouped(_frames(container)), [None]):  # None flushes the resampler
                for frame in resampler.resample(group):
                    block = frame.to_ndarray().reshape(-1)
                    total += len(block)
                    if total > limit:
                        raise MediaTooLong(f"the media is longer than the {max_s:.0f}-second limit")
                    yield block
    except av.FFmpegError as exc:
        raise UnsupportedMedia(f"the audio could not be decoded: {exc}") from exc


def _frames(container: Any) -> Iterator[Any]:
    """The first audio stream's frames, skipping any that fail to decode (as faster-whisper does)."""
    import av

    frames = container.decode(audio=0)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue


def _grouped(frames: Iterator[Any], samples: int = 500_000) -> Iterator[Any]:
    """The frames joined into runs of about `samples` (resampling frame by frame is slow), timestamps dropped."""
    import av

    fifo = av.AudioFifo()
    for frame in frames:
        frame.pts = None
        fifo.write(frame)
        if fifo.samples >= samples:
            yield fifo.read()
    if fifo.samples:
        yield fifo.read()


def speech_spans(audio: Any) -> list[Span]:
    """Where Silero VAD hears speech, in seconds."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(min_silence_duration_ms=MIN_SILENCE_MS, speech_pad_ms=SPEECH_PAD_MS)
    return [(span["start"] / SAMPLE_RATE, span["end"] / SAMPLE_RATE) for span in get_speech_timestamps(audio, options)]


def silences(speech: Sequence[Span], duration: float) -> list[Span]:
    """The stretches of [0, duration] outside speech."""
    gaps, position = [], 0.0
    for start, end in speech:
        if start > position:
            gaps.append((position, start))
        position = max(position, end)
    if duration > position:
        gaps.append((position, duration))
    return gaps


def plan(speech: Sequence[Span], duration: float, target_s: float, scores: Any = None) -> list[Span]:
    """Chunks covering [0, duration], each at most `target_s` long (so at most one Whisper window) and as full as
    the pauses allow.

    A chunk ends in the widest pause in the last fifth of its reach, else in the widest pause in its second half
    (the likeliest ends of sentences), else in the widest pause past its first eighth; with none, at the quietest
    frame of its last two seconds by the VAD's `scores` (32-ms frames), or at its reach without them.
    """
    return [(start, end) for start, end, _ in _reaching(speech, duration, target_s, _on_timeline(scores))]


# Where in [low, high] the quietest frame lies, or None: on the timeline a plan is made on.
Quietest = Callable[[float, float], float | None]


def _on_timeline(scores: Any) -> Quietest:
    return lambda low, high: _quietest(scores, [(low, high)])


def _reaching(
    speech: Sequence[Span], duration: float, target_s: float, quietest: Quietest, start: float = 0.0
) -> list[tuple[float, float, float]]:
    """`plan`'s chunks from `start` on, each with its reach: how far its cut looked (infinite for the last, which
    ends the file)."""
    quiet = silences(speech, duration)
    chunks = []
    while duration - start > target_s:
        high = start + target_s
        cut = (
            _cut_in(quiet, start + target_s * _FULL, high)
            or _cut_in(quiet, start + target_s * _SHORTEST, high)
            or _cut_in(quiet, start + target_s * _SHORTEST / 4, high)
            or quietest(high - _FORCED_REACH_S, high)
            or high
        )
        chunks.append((start, cut, high))
        start = cut
    chunks.append((start, duration, math.inf))
    return chunks


def squeezed_plan(
    speech: Sequence[Span],
    duration: float,
    target_s: float,
    pause_s: float,
    scores: Any = None,
    settled_s: float = math.inf,
    start_s: float = 0.0,
) -> list[list[Span]]:
    """Chunks as `plan` cuts them, on the file with every pause longer than `pause_s` shortened to it (its middle
    left out): each chunk is the stretches of the original timeline its audio is made of, at most `target_s` of
    audio in all, so a window holds speech rather than silence. `pause_s` 0: the chunks of `plan`, whole. No
    speech, no chunks: there is nothing to decode.

    `settled_s`: how much of the file is known for good, when the rest is still to come: only the chunks whose cut
    looked no further are given (never the last), as they will be once the whole file is known. `start_s`: where
    the first chunk begins, a cut made earlier (the chunks before it given already).
    """
    if not speech:
        return []
    if pause_s <= 0:
        chunks = _reaching(speech, duration, target_s, _on_timeline(scores), start_s)
        return [[(start, end)] for start, end, reach in chunks if reach <= settled_s]
    kept = _Kept(_kept(speech, duration, pause_s))
    inward = [(kept.inward(a), kept.inward(b)) for a, b in speech]
    settled = kept.inward(settled_s) if settled_s < duration else math.inf

    def quietest(low: float, high: float) -> float | None:  # the frames are the original timeline's
        found = _quietest(scores, kept.outward(low, high, exact=True))
        return None if found is None else kept.inward(found)

    chunks = _reaching(inward, kept.starts[-1], target_s, quietest, kept.inward(start_s))
    return [kept.outward(start, end) for start, end, reach in chunks if reach <= settled]


def _kept(speech: Sequence[Span], duration: float, pause_s: float) -> list[Span]:
    """The stretches of [0, duration] left once each pause longer than `pause_s` keeps only `pause_s` of itself
    (half at each end; a pause at the file's start or end keeps only its half next to speech)."""
    kept, start = [], 0.0
    for a, b in silences(speech, duration):
        if b - a <= pause_s:
            continue
        left = a + pause_s / 2 if a > 0 else a
        right = b - pause_s / 2 if b < duration else b
        if left > start:
            kept.append((start, left))
        start = right
    if duration > start:
        kept.append((start, duration))
    return kept


class _Kept:
    """The kept stretches of the original timeline, joined into the shortened one; times mapped either way by
    bisection, so a four-hour file's thousands of pauses cost no more per time than a few."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans = spans
        self.starts = list(itertools.accumulate((end - start for start, end in spans), initial=0.0))
        self.ends = [end for _, end in spans]

    def inward(self, t: float) -> float:
        """A time on the original timeline on the shortened one (a time in a left-out middle: where it was cut)."""
        index = bisect.bisect_left(self.ends, t)
        if index == len(self.spans):
            return self.starts[-1]
        return self.starts[index] + max(0.0, t - self.spans[index][0])

    def outward(self, low: float, high: float, exact: bool = False) -> list[Span]:
        """The stretches of the original timeline that [low, high] of the shortened one is made of (to the
        millisecond, unless `exact`)."""
        first_index = max(0, bisect.bisect_right(self.starts, low) - 2)
        last_index = min(len(self.spans), bisect.bisect_left(self.starts, high) + 1)
        spans = []
        for index in range(first_index, last_index):
            (a, b), at = self.spans[index], self.starts[index]
            first, last = a + max(low, at) - at, a + min(high, at + b - a) - at
            if not exact:
                first, last = round(first, 3), round(last, 3)
            if last > first:
                spans.append((first, last))
        return spans


def _quietest(scores: Any, spans: Sequence[Span]) -> float | None:
    """The middle of the frame least likely to be speech (the first of equals) among the 32-ms frames that lie
    wholly in `spans`, on the original timeline; None without scores or such a frame."""
    if scores is None:
        return None
    frame_s, best = 512 / SAMPLE_RATE, None
    for low, high in spans:
        first, last = max(0, math.ceil(low / frame_s - 1e-6)), min(math.floor(high / frame_s + 1e-6), len(scores))
        for index in range(first, last):
            if best is None or scores[index] < scores[best]:
                best = index
    return None if best is None else (best + 0.5) * frame_s


def _cut_in(quiet: Sequence[Span], low: float, high: float) -> float | None:
    """The middle of the widest silence within (low, high], clipped to it; None if no silence reaches in."""
    clipped = [(max(a, low), min(b, high)) for a, b in quiet if b > low and a < high]
    if not clipped:
        return None
    a, b = max(clipped, key=lambda span: (round(span[1] - span[0], 3), span[0]))  # the later of pauses alike
    return (a + b) / 2

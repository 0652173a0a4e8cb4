"""Cutting long audio at silences into chunks that any worker can transcribe on its own."""

from __future__ import annotations

import itertools
import wave
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from shared.errors import MediaTooLong, NoAudioStream, UnsupportedMedia
from shared.schemas import Chunk

SAMPLE_RATE = 16_000

# Silero VAD settings for finding cut points: pauses of 0.3 s count, and speech keeps 0.1 s of
# padding each side, so a cut lies at least 0.15 s from anything the VAD heard as speech.
_MIN_SILENCE_MS = 150
_SPEECH_PAD_MS = 30

# A chunk ends no sooner than this share of the target, so most chunks fill a Whisper window.
_SHORTEST = 0.5

Span = tuple[float, float]


def decode(path: Path, max_s: float) -> Any:
    """The media's first audio track as 16 kHz mono float32 samples; MediaTooLong past `max_s` seconds.

    As faster-whisper decodes (16-bit mono, timestamps ignored), but it stops at the limit whatever the container
    claims: a small file of long compressed silence cannot fill the worker's memory.
    """
    import av
    import numpy as np

    limit = 2 * round(max_s * SAMPLE_RATE)  # in bytes of 16-bit samples
    pcm = bytearray()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NoAudioStream("the media holds no audio stream")
            for group in itertools.chain(_grouped(_frames(container)), [None]):  # None flushes the resampler
                for frame in resampler.resample(group):
                    pcm += frame.to_ndarray().tobytes()
                if len(pcm) > limit:
                    raise MediaTooLong(f"the media is longer than the {max_s:.0f}-second limit")
    except av.FFmpegError as exc:
        raise UnsupportedMedia(f"the audio could not be decoded: {exc}") from exc
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


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

    options = VadOptions(min_silence_duration_ms=_MIN_SILENCE_MS, speech_pad_ms=_SPEECH_PAD_MS)
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


def plan(speech: Sequence[Span], duration: float, target_s: float) -> list[Span]:
    """Chunks covering [0, duration], cut only in silences, each as close to `target_s` as the pauses allow.

    A chunk ends in the widest pause between half the target and the target after its start (the
    likeliest end of a sentence); with no pause there, in the first pause after, so never inside speech.
    """
    quiet = silences(speech, duration)
    chunks, start = [], 0.0
    while duration - start > target_s:
        low = start + target_s * _SHORTEST
        cut = _cut_in(quiet, low, start + target_s) or _first_cut_after(quiet, start + target_s)
        if cut is None:
            break
        chunks.append((start, cut))
        start = cut
    chunks.append((start, duration))
    return chunks


def _cut_in(quiet: Sequence[Span], low: float, high: float) -> float | None:
    """The middle of the widest silence within (low, high], clipped to it; None if no silence reaches in."""
    clipped = [(max(a, low), min(b, high)) for a, b in quiet if b > low and a < high]
    if not clipped:
        return None
    a, b = max(clipped, key=lambda span: (span[1] - span[0], span[0]))
    return (a + b) / 2


def _first_cut_after(quiet: Sequence[Span], low: float, reach_s: float = 1.0) -> float | None:
    """A cut near the start of the first silence after `low` (inside its first second)."""
    for a, b in quiet:
        if b > low:
            a = max(a, low)
            return (a + min(b, a + reach_s)) / 2
    return None


def write_chunks(audio: Any, spans: Sequence[Span], path_of: Callable[[int], Path]) -> list[Chunk]:
    """Write each span of the samples as a 16-bit mono WAV file at `path_of(index)`; the chunks, in order."""
    import numpy as np

    chunks = []
    for index, (start, end) in enumerate(spans):
        samples = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        path = path_of(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(pcm.tobytes())
        chunks.append(Chunk(index=index, start=round(start, 3), end=round(end, 3)))
    return chunks

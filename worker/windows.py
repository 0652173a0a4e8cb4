"""Decoding windows of at most 30 s, several at once: one encoder pass and one beam search for a whole batch.

A long file's chunks are cut to fit one Whisper window each, so a window is decoded once, never padded past what it
needs and never sought through a second time. Windows decode together only when everything that shapes one batch
matches (`batch_key`). A window whose text fails Whisper's checks (a repetition loop, a low log-probability that is
not silence) is decoded again on its own, by the engine's one-window-at-a-time path with its temperature fallback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from shared.enums import TaskType
from shared.schemas import AFTER_DECODE_OPTIONS, Segment, TranscribeOptions, Word
from worker import engine as engines
from worker import nonspeech

RATE = 16_000
WINDOW_S = 30.0
# A segment Whisper leaves open is marked with this `seek` until its window is settled.
_OPEN = -1
# An open segment that starts this close to its window's end is kept as it is.
_SHORTEST_REST_S = 0.5


@dataclass(frozen=True)
class Window:
    """Up to 30 s of 16 kHz samples to decode, and how."""

    samples: np.ndarray
    task_type: TaskType
    language: str
    options: TranscribeOptions

    @property
    def duration(self) -> float:
        """Seconds of audio in the window."""
        return len(self.samples) / RATE


def batch_key(window: Window) -> tuple[str, ...]:
    """What must match for windows to share a batch: the task, the language and every decoding option."""
    options = window.options.model_dump_json(
        exclude={"language", "clip_timestamps", "vad_filter", "vad_parameters", *AFTER_DECODE_OPTIONS}
    )
    return (window.task_type.value, window.language, options)


def decode(engine: engines.Engine, windows: Sequence[Window], tails: bool = True) -> list[list[Segment]]:
    """Each window's segments (times within the window), in the order given; windows of one batch_key only.

    Where Whisper leaves a window's last segment open (its words run on past the end, as it judges), the rest of
    the window from that segment's start is decoded again, those rests together in one more batch (`tails`).
    """
    if not windows:
        return []
    if len({batch_key(window) for window in windows}) > 1:
        raise ValueError("windows of different tasks, languages or options cannot share a batch")
    first = windows[0]
    tokenizer = _tokenizer(engine, first)
    options = _options(engine, tokenizer, first.options)
    features = np.stack([_features(engine, window.samples) for window in windows])
    encoded, outputs = _pipeline(engine).generate_segment_batched(features, tokenizer, options)
    parts = [_parts(engine, tokenizer, output, window) for output, window in zip(outputs, windows, strict=True)]
    rests = [_rest(raw, window) for raw, window in zip(parts, windows, strict=True)]  # before words move the times
    if options.word_timestamps:
        sizes = [_frames(engine, window) for window in windows]
        engine.model.add_word_timestamps(
            parts, tokenizer, encoded, sizes, options.prepend_punctuations, options.append_punctuations, 0.0
        )
    decoded = [_settle(engine, window, raw) for window, raw in zip(windows, parts, strict=True)]
    settled = _redo_tails(engine, windows, decoded, rests) if tails else decoded
    return [_numbered(_heard(window, segments)) for window, segments in zip(windows, settled, strict=True)]


def _heard(window: Window, segments: list[Segment]) -> list[Segment]:
    """The window's segments less the text Whisper made up on non-speech, unless the task keeps it."""
    keep = nonspeech.keeper(window.samples, window.options)
    return [segment for segment in segments if keep(segment)]


def _redo_tails(
    engine: engines.Engine, windows: Sequence[Window], decoded: list[list[Segment]], rests: list[float | None]
) -> list[list[Segment]]:
    """The open last segments decoded again from where their rests start, in one batch, and put in their windows'
    place."""
    opened = [
        (index, start)
        for index, (segments, start) in enumerate(zip(decoded, rests, strict=True))
        if start is not None and segments and segments[-1].seek == _OPEN
    ]
    if not opened:
        return decoded
    rest_windows = [
        replace(windows[index], samples=windows[index].samples[round(start * RATE) :]) for index, start in opened
    ]
    for (index, start), redone in zip(opened, decode(engine, rest_windows, tails=False), strict=True):
        kept = [_ending_by(segment, start) for segment in decoded[index] if segment.start < start]
        decoded[index] = [*kept, *(_later(segment, start) for segment in redone)]
    return decoded


def _rest(parts: list[dict[str, Any]], window: Window) -> float | None:
    """Where to decode the window again from, by Whisper's own timestamps, if it left its last segment open: the
    end of the segment before it (Whisper may place the open one's start after its first word), else the open
    one's start. None where nothing is open, where it is open from the window's start, and where the rest would
    start too near the end of the audio (or past it) to be worth a decode."""
    if not parts or parts[-1]["seek"] != _OPEN or parts[-1]["start"] >= window.duration - _SHORTEST_REST_S:
        return None
    start = float(parts[-2]["end"] if len(parts) > 1 else parts[-1]["start"])
    return start if 0 < start < window.duration - _SHORTEST_REST_S else None


def _later(segment: Segment, offset: float) -> Segment:
    """A segment decoded from `offset` seconds into its window, placed on the window's timeline."""
    words = [w.model_copy(update={"start": w.start + offset, "end": w.end + offset}) for w in segment.words or []]
    update: dict[str, Any] = {"start": round(segment.start + offset, 3), "end": round(segment.end + offset, 3)}
    if segment.words is not None:
        update["words"] = words
    return segment.model_copy(update=update)


def _ending_by(segment: Segment, limit: float) -> Segment:
    """A segment whose end (and words) do not run past `limit`, where the next one starts."""
    if segment.end <= limit:
        return segment
    words = [w.model_copy(update={"start": min(w.start, limit), "end": min(w.end, limit)}) for w in segment.words or []]
    return segment.model_copy(update={"end": limit, "words": words if segment.words is not None else None})


def _numbered(segments: list[Segment]) -> list[Segment]:
    """The window's segments with text, numbered from 1, their times (and their words') never running backwards."""
    ordered, floor = [], 0.0
    for index, segment in enumerate([segment for segment in segments if segment.text.strip()], 1):
        start = max(segment.start, floor)
        end = max(segment.end, start)
        words = _words_within(segment.words, start, end) if segment.words is not None else None
        ordered.append(segment.model_copy(update={"id": index, "seek": 0, "start": start, "end": end, "words": words}))
        floor = end
    return ordered


def _words_within(words: list[Word], start: float, end: float) -> list[Word]:
    """Words kept inside their segment, each starting where the one before ended at the earliest."""
    placed, floor = [], start
    for word in words:
        first = min(max(word.start, floor), end)
        last = min(max(word.end, first), end)
        placed.append(word.model_copy(update={"start": first, "end": last}))
        floor = last
    return placed


def _frames(engine: engines.Engine, window: Window) -> int:
    return int(math.ceil(min(window.duration, WINDOW_S)) * engine.model.frames_per_second)


def _parts(engine: engines.Engine, tokenizer: Any, output: dict[str, Any], window: Window) -> list[dict[str, Any]]:
    """A window's output cut into segments at its timestamps, the last one kept even if Whisper left it open.

    Decoding one file, Whisper leaves a segment open where it runs on into the next window, and faster-whisper
    drops it to decode it again from there; a window here has no next one, so its open segment runs to its end.
    """
    from faster_whisper.transcribe import get_compression_ratio

    tokens, duration = output["tokens"], min(window.duration, WINDOW_S)
    parts: list[dict[str, Any]]
    parts, _, closed = engine.model._split_segments_by_timestamps(
        tokenizer=tokenizer,
        tokens=tokens,
        time_offset=0.0,
        segment_size=_frames(engine, window),
        segment_duration=duration,
        seek=0,
    )
    used = sum(len(part["tokens"]) for part in parts)
    if not closed and used < len(tokens):
        tail = tokens[used:]
        start = (tail[0] - tokenizer.timestamp_begin) * engine.model.time_precision
        parts.append({"seek": _OPEN, "start": start, "end": duration, "tokens": tail})
    for part in parts:
        text = tokenizer.decode(part["tokens"])
        part.update(text=text, compression_ratio=get_compression_ratio(text), avg_logprob=output["avg_logprob"])
        part["no_speech_prob"] = output["no_speech_prob"]
    return parts


def _settle(engine: engines.Engine, window: Window, raw: list[dict[str, Any]]) -> list[Segment]:
    """A window's segments: none if it is silence, decoded again alone if its text fails Whisper's checks."""
    if _silent(raw, window.options):
        return []
    if _fails(raw, window.options):
        return _redo(engine, window)
    segments = [_segment(index, part, window.options.temperature[0]) for index, part in enumerate(raw, 1)]
    return [segment for segment in segments if segment.text.strip() or segment.seek == _OPEN]


def _silent(raw: list[dict[str, Any]], options: TranscribeOptions) -> bool:
    """As the sequential path skips a window: likely no speech, and text it is unsure of."""
    if not raw or options.no_speech_threshold is None:
        return not raw
    unsure = options.log_prob_threshold is None or raw[0]["avg_logprob"] < options.log_prob_threshold
    return raw[0]["no_speech_prob"] > options.no_speech_threshold and unsure


def _pipeline(engine: engines.Engine) -> Any:
    from faster_whisper import BatchedInferencePipeline

    return engine.batched if engine.batched is not None else BatchedInferencePipeline(engine.model)


def _tokenizer(engine: engines.Engine, window: Window) -> Any:
    from faster_whisper.tokenizer import Tokenizer

    language = window.language if engine.multilingual else "en"
    return Tokenizer(engine.model.hf_tokenizer, engine.multilingual, task=window.task_type.value, language=language)


def _options(engine: engines.Engine, tokenizer: Any, options: TranscribeOptions) -> Any:
    """faster-whisper's options for one batch: the task's, at its first temperature, with segment timestamps."""
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    return TranscriptionOptions(
        beam_size=options.beam_size,
        best_of=options.best_of,
        patience=options.patience,
        length_penalty=1,
        repetition_penalty=1,
        no_repeat_ngram_size=0,
        log_prob_threshold=options.log_prob_threshold,
        no_speech_threshold=options.no_speech_threshold,
        compression_ratio_threshold=options.compression_ratio_threshold,
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=options.temperature[:1],
        initial_prompt=options.initial_prompt,
        prefix=None,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=False,
        max_initial_timestamp=0.0,
        word_timestamps=options.word_timestamps,
        prepend_punctuations=options.prepend_punctuations,
        append_punctuations=options.append_punctuations,
        multilingual=False,
        max_new_tokens=None,
        clip_timestamps="0",
        hallucination_silence_threshold=None,
        hotwords=options.hotwords,
    )


def _features(engine: engines.Engine, samples: np.ndarray) -> np.ndarray:
    """The window's log-Mel features, padded with silence to 30 s.

    Padding the samples (as Whisper does), not the features with zeros (as faster-whisper does), lets the model
    hear that speech ends before the window does, so it closes the window's last segment instead of leaving it
    open for a next window.
    """
    padded = np.zeros(round(WINDOW_S * RATE), np.float32)
    padded[: min(len(samples), len(padded))] = samples[: len(padded)]
    frames = engine.model.feature_extractor.nb_max_frames
    features: np.ndarray = engine.model.feature_extractor(padded)[..., :frames]
    return features


def _fails(raw: list[dict[str, Any]], options: TranscribeOptions) -> bool:
    """True where Whisper's sequential path would have decoded again at a higher temperature."""
    if not raw or len(options.temperature) < 2:
        return False
    text = "".join(part["text"] for part in raw)
    from faster_whisper.transcribe import get_compression_ratio

    ratio, logprob = get_compression_ratio(text), raw[0]["avg_logprob"]
    repeats = options.compression_ratio_threshold is not None and ratio > options.compression_ratio_threshold
    unsure = options.log_prob_threshold is not None and logprob < options.log_prob_threshold
    return repeats or unsure


def _redo(engine: engines.Engine, window: Window) -> list[Segment]:
    """The window decoded alone by the sequential path, which falls back through the task's temperatures."""
    options = window.options.model_copy(update={"language": window.language, "condition_on_previous_text": False})
    kwargs = engines.decoding_kwargs(options)
    segments, _ = engine.model.transcribe(window.samples, task=window.task_type.value, **kwargs)
    return [engines.segment_of(raw) for raw in segments]


def _segment(index: int, part: dict[str, Any], temperature: float) -> Segment:
    words = part.get("words")
    return Segment(
        id=index,
        seek=part["seek"],
        start=round(part["start"], 3),
        end=round(part["end"], 3),
        text=part["text"],
        tokens=list(part["tokens"]),
        temperature=temperature,
        avg_logprob=part["avg_logprob"],
        compression_ratio=part["compression_ratio"],
        no_speech_prob=part["no_speech_prob"],
        words=[_word(word) for word in words] if words is not None else None,
    )


def _word(word: dict[str, Any]) -> Word:
    return Word(start=word["start"], end=word["end"], word=word["word"], probability=word["probability"])

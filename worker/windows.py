"""Decoding windows of at most 30 s, several at once: one encoder pass and one beam search for a whole batch.

A long file's chunks are cut to fit one Whisper window each, so a window is decoded once, never padded past what it
needs and never sought through a second time. Windows decode together only when everything that shapes one batch
matches (`batch_key`). A window whose text fails Whisper's checks (a repetition loop, a low log-probability that is
not silence) is decoded again on its own, by the engine's one-window-at-a-time path with its temperature fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.enums import TaskType
from shared.schemas import Segment, TranscribeOptions, Word
from worker import engine as engines

RATE = 16_000
WINDOW_S = 30.0


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
    options = window.options.model_dump_json(exclude={"language", "clip_timestamps", "vad_filter", "vad_parameters"})
    return (window.task_type.value, window.language, options)


def decode(engine: engines.Engine, windows: Sequence[Window]) -> list[list[Segment]]:
    """Each window's segments (times within the window), in the order given; windows of one batch_key only."""
    if not windows:
        return []
    if len({batch_key(window) for window in windows}) > 1:
        raise ValueError("windows of different tasks, languages or options cannot share a batch")
    first = windows[0]
    pipeline = _pipeline(engine)
    tokenizer = _tokenizer(engine, first)
    options = _options(engine, tokenizer, first.options)
    features = np.stack([_features(engine, window.samples) for window in windows])
    metadata = [{"offset": 0.0, "duration": min(window.duration, WINDOW_S)} for window in windows]
    outputs = pipeline.forward(features, tokenizer, metadata, options)
    return [_settle(engine, window, raw) for window, raw in zip(windows, outputs, strict=True)]


def _settle(engine: engines.Engine, window: Window, raw: list[dict[str, Any]]) -> list[Segment]:
    """A window's segments: none if it is silence, decoded again alone if its text fails Whisper's checks."""
    if _silent(raw, window.options):
        return []
    if _fails(raw, window.options):
        return _redo(engine, window)
    return [_segment(index, part, window.options.temperature[0]) for index, part in enumerate(raw, 1)]


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
    from faster_whisper.audio import pad_or_trim

    return pad_or_trim(engine.model.feature_extractor(samples)[..., :-1])


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

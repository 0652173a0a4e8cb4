"""The engine: one faster-whisper model, loaded once per worker process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shared.enums import TaskType
from shared.errors import MediaTooLong, NoAudioStream, UnsupportedMedia
from shared.schemas import AFTER_DECODE_OPTIONS, Segment, TranscribeOptions, Transcript, Word, check_model_fits
from shared.settings import Settings
from worker import nonspeech, splitting
from worker.models import resolve_model

log = logging.getLogger(__name__)

T = TypeVar("T")

# Called with the share of the audio done and the segment just decoded.
ProgressCallback = Callable[[float, Segment], None]


@dataclass(frozen=True)
class Engine:
    """A loaded model and where it runs."""

    model: Any
    name: str
    device: str
    compute_type: str
    max_audio_s: float
    batched: Any = None
    batch_size: int = 0
    cpu_threads: int = 0  # CPU threads this copy decodes with (0: not set)

    @property
    def multilingual(self) -> bool:
        """False for English-only models such as tiny.en."""
        return bool(self.model.model.is_multilingual)


def pick_device(requested: str) -> str:
    """cuda when asked for, or when auto finds a GPU; otherwise cpu."""
    if requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def pick_compute_type(requested: str, device: str) -> str:
    """int8 on CPU and float16 on GPU unless a type is set."""
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


def load_engine(settings: Settings, nice: int = 0, copies: int = 1) -> Engine:
    """Resolve and load the model this worker serves; its decodes run `nice` steps below the worker's CPU priority,
    on its share of the CPU threads where `copies` copies decode at once."""
    from faster_whisper import WhisperModel

    path = resolve_model(settings.served_model, settings.models, settings.allow_download)
    device = pick_device(settings.device)
    compute_type = pick_compute_type(settings.compute_type, device)
    log.info("loading model %s from %s on %s (%s)", settings.served_model, path, device, compute_type)
    # A worker that serves live sessions beside queued tasks decodes from two threads at once.
    replicas = 2 if settings.role == "both" else 1
    threads = cpu_threads(settings, copies)
    options = {"device": device, "compute_type": compute_type, "cpu_threads": threads, "num_workers": replicas}
    model = niced(nice, lambda: WhisperModel(str(path), **options))
    batched = None
    if settings.batch_size > 1:
        from faster_whisper import BatchedInferencePipeline

        batched = BatchedInferencePipeline(model)
    return Engine(
        model=model,
        name=settings.served_model,
        device=device,
        compute_type=compute_type,
        max_audio_s=settings.max_media_duration_s,
        batched=batched,
        batch_size=settings.batch_size,
        cpu_threads=threads,
    )


def cpu_threads(settings: Settings, copies: int = 1) -> int:
    """CPU threads for one copy of the model: the setting, else the cores this process may use shared among the
    copies that decode at once, at most 4 each.

    CTranslate2 takes 4 threads when told 0; on a smaller machine that oversubscribes its cores: on two cores a
    window took 15 to 20 % longer with 4 threads than with 2.
    """
    return settings.cpu_threads or max(1, min(4, len(os.sched_getaffinity(0)) // copies))


def niced(steps: int, build: Callable[[], T]) -> T:
    """What `build` returns, built in a thread of its own whose CPU niceness is raised by `steps` (at most to 19).

    Linux keeps a niceness per thread and a new thread inherits its creator's: the threads CTranslate2 starts for
    a model (its replicas, and their OpenMP threads on first use) run at the niceness of the thread that built it.
    """
    if steps <= 0:
        return build()
    built: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        current = os.getpriority(os.PRIO_PROCESS, 0)  # who 0: this thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, current + steps))
        try:
            built.append(build())
        except BaseException as exc:  # raised again in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="niced-load")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return built[0]


def decoding_kwargs(options: TranscribeOptions) -> dict[str, Any]:
    """faster-whisper's transcribe() arguments for a task's options."""
    assert options.allowed_languages is None, "a list of languages is narrowed to one by detection first"
    kwargs = options.model_dump(exclude={"clip_timestamps", "vad_parameters", *AFTER_DECODE_OPTIONS})
    kwargs["temperature"] = tuple(options.temperature)
    kwargs["clip_timestamps"] = options.clip_timestamps or "0"
    if options.vad_parameters is not None:
        vad = options.vad_parameters.model_dump(exclude_none=True)
        kwargs["vad_parameters"] = vad
    return kwargs


def batched_kwargs(options: TranscribeOptions, batch_size: int) -> dict[str, Any]:
    """BatchedInferencePipeline's arguments: it cuts the audio at silences itself, and takes clips as dicts."""
    kwargs = decoding_kwargs(options)
    clips = options.clip_timestamps or []
    pairs = zip(clips[::2], clips[1::2], strict=False)  # a last start without an end is left out
    kwargs["clip_timestamps"] = [{"start": a, "end": b} for a, b in pairs] or None
    kwargs["vad_filter"] = True
    kwargs["batch_size"] = batch_size
    return kwargs


def detect_language(engine: Engine, samples: Any, allowed: list[str] | None = None) -> tuple[str, float]:
    """The language spoken in these 16 kHz samples (their first 30 s) and its probability; English for .en models.

    Given the allowed languages, the most probable of them, with its probability among all the model knows.
    """
    if not engine.multilingual:
        return "en", 1.0
    language, probability, ranked = engine.model.detect_language(audio=samples)
    if allowed is not None:
        probabilities = {str(code): float(p) for code, p in ranked}
        language = max(allowed, key=lambda code: probabilities.get(code, 0.0))
        probability = probabilities.get(language, 0.0)
    return str(language), round(float(probability), 4)


def probe(path: Path, max_s: float) -> float | None:
    """The audio's duration in seconds if the container says; refuses what is not media, has no audio, or is too long.

    Media that holds more than its container says is stopped when it is decoded (`splitting.decode`).
    """
    duration = _stated_duration(path)
    if duration is not None and duration > max_s:
        raise MediaTooLong(f"the media lasts {duration:.0f} s, over the {max_s:.0f}-second limit")
    return duration


def _stated_duration(path: Path) -> float | None:
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NoAudioStream("the media holds no audio stream")
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / av.time_base if container.duration else None
    except av.FFmpegError as exc:
        raise UnsupportedMedia(f"the file could not be read as media: {exc}") from exc


def transcribe(
    engine: Engine, path: Path, task_type: TaskType, options: TranscribeOptions, on_progress: ProgressCallback
) -> Transcript:
    """Transcribe or translate a media file, reporting progress (0 to 1) as segments arrive.

    The audio is decoded here, not by faster-whisper, so that decoding stops at the engine's `max_audio_s`.
    """
    check_model_fits(engine.name, engine.multilingual, task_type, options.language)
    audio = splitting.decode(path, engine.max_audio_s)
    detected = None
    if options.allowed_languages is not None:
        detected = detect_language(engine, audio, options.allowed_languages)
        options = options.model_copy(update={"language": detected[0]})
    if engine.batched is not None:
        kwargs = batched_kwargs(options, engine.batch_size)
        segments, info = engine.batched.transcribe(audio, task=task_type.value, **kwargs)
    else:
        segments, info = engine.model.transcribe(audio, task=task_type.value, **decoding_kwargs(options))
    if info.duration <= 0:
        raise UnsupportedMedia("the media holds no audio samples")
    collected = _collect(segments, info.duration, on_progress, nonspeech.keeper(audio, options))
    return Transcript(
        task=task_type,
        language=info.language,
        language_probability=detected[1] if detected else round(info.language_probability, 4),
        duration=info.duration,
        text="".join(segment.text for segment in collected).strip(),
        segments=collected,
    )


def _collect(
    segments: Iterable[Any], duration: float, on_progress: ProgressCallback, keep: Callable[[Segment], bool]
) -> list[Segment]:
    """The segments kept, numbered from 1, each reported as it comes."""
    collected: list[Segment] = []
    for raw in segments:
        segment = segment_of(raw)
        if keep(segment):
            collected.append(segment.model_copy(update={"id": len(collected) + 1}))
            on_progress(min(1.0, raw.end / duration) if duration > 0 else 0.0, collected[-1])
    return collected


def segment_of(raw: Any) -> Segment:
    """Our Segment from one of faster-whisper's."""
    words = [Word(start=w.start, end=w.end, word=w.word, probability=w.probability) for w in raw.words or []]
    return Segment(
        id=raw.id,
        seek=raw.seek,
        start=raw.start,
        end=raw.end,
        text=raw.text,
        tokens=list(raw.tokens),
        temperature=raw.temperature,
        avg_logprob=raw.avg_logprob,
        compression_ratio=raw.compression_ratio,
        no_speech_prob=raw.no_speech_prob,
        words=words if raw.words is not None else None,
    )

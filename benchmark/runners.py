"""Ways to transcribe a clip: the raw engine in this process, or the whole service over HTTP."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from benchmark.dataset import Clip, spoken_language
from shared.schemas import TranscribeOptions
from shared.settings import Settings
from worker import replicas
from worker.engine import cpu_threads, decoding_kwargs, pick_compute_type, pick_device
from worker.models import resolve_model


@dataclass(frozen=True)
class Outcome:
    """What one path made of one clip."""

    clip: Clip
    path: str
    model: str
    hypothesis: str
    language: str | None
    audio_s: float
    latency_s: float
    processing_s: float
    error: str | None = None
    queued_s: float = 0.0


Progress = Callable[[Outcome], None]


class Runner(Protocol):
    """Transcribes clips with one model along one path."""

    path: str
    model: str

    def run(self, clip: Clip) -> Outcome: ...


def options_for(clip: Clip) -> TranscribeOptions:
    """The same decoding options on every path: defaults, with the clip's language when it is one known language."""
    return TranscribeOptions(language=spoken_language(clip))


def failed(clip: Clip, runner: Runner, error: Exception) -> Outcome:
    """The outcome of a clip a path could not transcribe: recorded, so one bad file does not end the run."""
    return Outcome(
        clip=clip,
        path=runner.path,
        model=runner.model,
        hypothesis="",
        language=None,
        audio_s=clip.duration or 0.0,
        latency_s=0.0,
        processing_s=0.0,
        error=f"{type(error).__name__}: {error}",
    )


class EngineRunner:
    """faster-whisper called directly, as a program without whisperq would, on as many CPU threads as one copy of
    a worker's model decodes with (the same settings), so that the service is compared like for like."""

    path = "engine"

    def __init__(self, model: str, settings: Settings) -> None:
        from faster_whisper import WhisperModel

        self.model = model
        device = pick_device(settings.device)
        self.whisper = WhisperModel(
            str(resolve_model(model, settings.models, settings.allow_download)),
            device=device,
            compute_type=pick_compute_type(settings.compute_type, device),
            cpu_threads=cpu_threads(settings, replicas.count(settings, device)),
        )

    def run(self, clip: Clip) -> Outcome:
        try:
            return self._transcribe(clip)
        except Exception as error:  # a file the decoder cannot read, say: that clip fails, the run goes on
            return failed(clip, self, error)

    def _transcribe(self, clip: Clip) -> Outcome:
        started = time.perf_counter()
        segments, info = self.whisper.transcribe(str(clip.audio), **decoding_kwargs(options_for(clip)))
        text = "".join(segment.text for segment in segments).strip()
        elapsed = time.perf_counter() - started
        return Outcome(
            clip=clip,
            path=self.path,
            model=self.model,
            hypothesis=text,
            language=info.language,
            audio_s=info.duration,
            latency_s=elapsed,
            processing_s=elapsed,
        )


class ApiRunner:
    """The service end to end: upload, queue, worker, poll until done."""

    path = "api"

    def __init__(
        self, url: str, model: str, poll_s: float = 0.05, timeout_s: float = 3600, api_key: str | None = None
    ) -> None:
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url, timeout=60, headers=headers)
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    def __enter__(self) -> ApiRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def run(self, clip: Clip) -> Outcome:
        try:
            return self._transcribe(clip)
        except Exception as error:  # refused upload, dropped connection: that clip fails, the run goes on
            return failed(clip, self, error)

    def _transcribe(self, clip: Clip) -> Outcome:
        started = time.perf_counter()
        task_id = self._submit(clip)
        uploaded = time.perf_counter() - started
        task = self._wait(task_id)
        # Upload plus the service's own span (created to finished), so the poll interval adds nothing.
        elapsed = uploaded + _seconds_between(task.get("created_at"), task.get("finished_at"))
        result = task.get("result") or {}
        error = None if task["status"] == "completed" else f"{task['status']}: {task.get('error')}"
        return Outcome(
            clip=clip,
            path=self.path,
            model=self.model,
            hypothesis=result.get("text", ""),
            language=task.get("language"),
            audio_s=task.get("duration") or clip.duration or 0.0,
            latency_s=elapsed,
            processing_s=task.get("processing_seconds") or 0.0,
            error=error,
            queued_s=_seconds_between(task.get("created_at"), task.get("started_at")),
        )

    def _submit(self, clip: Clip) -> str:
        language = spoken_language(clip)
        fields = {"model": self.model, **({"language": language} if language else {})}
        with clip.audio.open("rb") as handle:
            response = self.client.post("/v1/tasks", files={"file": (clip.audio.name, handle)}, data=fields)
        response.raise_for_status()
        return str(response.json()["id"])

    def _wait(self, task_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            task: dict[str, Any] = self.client.get(f"/v1/tasks/{task_id}").json()
            if task["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                return task
            time.sleep(self.poll_s)


def _seconds_between(start: str | None, end: str | None) -> float:
    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_all(runner: Runner, clips: Sequence[Clip], concurrency: int, progress: Progress) -> tuple[list[Outcome], float]:
    """Every clip through the runner, `concurrency` at a time; the outcomes in clip order and the wall time."""

    def one(clip: Clip) -> Outcome:
        outcome = runner.run(clip)
        progress(outcome)
        return outcome

    started = time.perf_counter()
    if concurrency <= 1:
        outcomes = [one(clip) for clip in clips]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            outcomes = list(pool.map(one, clips))
    return outcomes, time.perf_counter() - started


def own_peak_memory_mb() -> float:
    """Peak resident memory of this process (the engine path's worker), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""Ways to keep one device busy, as x real time and WER, on the long files and on short English clips.

python -m benchmark.device [--model base] [--clips 200] [--quick] [--runs 1] [--batch 0] [--replicas 2]
                           [--modes sequential,batched-file,batched-clips,replicas,replicas-processes]
                           [--sets long,clips] [--out benchmark-results/device.md]

- sequential: WhisperModel.transcribe per item, one 30-second window at a time (beam 5, language given).
- batched-file: BatchedInferencePipeline per item: the item's own VAD chunks decoded --batch at a time.
- batched-clips: windows of different items decoded together, --batch per generate call (`decode_windows`).
- replicas: one WhisperModel with num_workers=--replicas, and as many threads taking items from one queue.
- replicas-processes: --replicas processes with a model each, taking items from one queue.
On CPU each replica gets its share of --cpu-threads, so that every mode uses the same cores. Audio is decoded and
models are loaded and warmed before the clock starts: the figures are the device's work on samples in memory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.dataset import Filters, load_manifest
from benchmark.longfiles import DATA, LONG_FILES
from benchmark.scoring import error_rates, normalise
from shared.settings import Settings
from worker.engine import pick_compute_type, pick_device
from worker.models import resolve_model

SAMPLE_RATE = 16000
WINDOW_S = 30
WARM_S = 5
LANGUAGE = "en"
BEAM_SIZE = 5
MODES = ("sequential", "batched-file", "batched-clips", "replicas", "replicas-processes")
SETS = ("long", "clips")


@dataclass(frozen=True)
class Item:
    """One recording, decoded, with its normalised reference."""

    id: str
    audio: np.ndarray
    reference: str

    @property
    def seconds(self) -> float:
        """The audio's length in seconds."""
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class Setup:
    """How every model of the run is loaded and decodes."""

    model_path: str
    device: str
    compute_type: str
    cpu_threads: int
    batch: int
    replicas: int

    def load(self, share: int = 1, workers: int = 1) -> Any:
        """A WhisperModel with a 1/share of the CPU threads, and `workers` replicas that decode concurrently."""
        from faster_whisper import WhisperModel

        threads = max(1, self.cpu_threads // share)
        return WhisperModel(
            self.model_path, self.device, compute_type=self.compute_type, cpu_threads=threads, num_workers=workers
        )


@dataclass
class Row:
    """One mode on one set."""

    mode: str
    set: str
    items: int
    audio_s: float
    walls: list[float] = field(default_factory=list)
    wer: float = float("nan")

    @property
    def wall_s(self) -> float:
        """The median wall time of the runs."""
        return statistics.median(self.walls)

    @property
    def xrt(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_s / self.wall_s


# --- the modes: each returns the items' texts in order and its wall seconds, loading and warm-up left out ---


def transcribe_one(model: Any, audio: np.ndarray) -> str:
    """faster-whisper's default path: one window at a time, conditioned on the previous text."""
    segments, _ = model.transcribe(audio, language=LANGUAGE, beam_size=BEAM_SIZE)
    return "".join(segment.text for segment in segments)


def sequential(setup: Setup, model: Any, items: Sequence[Item]) -> list[str]:
    """Each item through WhisperModel.transcribe."""
    return [transcribe_one(model, item.audio) for item in items]


def batched_file(setup: Setup, model: Any, items: Sequence[Item]) -> list[str]:
    """Each item through BatchedInferencePipeline: its own windows batched, never another item's."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)
    texts = []
    for item in items:
        segments, _ = pipeline.transcribe(item.audio, language=LANGUAGE, beam_size=BEAM_SIZE, batch_size=setup.batch)
        texts.append("".join(segment.text for segment in segments))
    return texts


def batched_clips(setup: Setup, model: Any, items: Sequence[Item]) -> list[str]:
    """Windows of all items in one stream, --batch per generate call; each window's text joins its item's."""
    texts: list[list[str]] = [[] for _ in items]
    for batch in batches(windows(model, items), setup.batch):
        owners, features = zip(*batch, strict=True)
        for owner, text in zip(owners, decode_windows(model, np.stack(features)), strict=True):
            texts[owner].append(text)
    return ["".join(parts) for parts in texts]


def windows(model: Any, items: Sequence[Item]) -> Iterator[tuple[int, np.ndarray]]:
    """(item index, 30-second log-mel window), made as the batches need them, the way the pipeline pads them."""
    from faster_whisper.audio import pad_or_trim

    for index, item in enumerate(items):
        for chunk in speech_chunks(item.audio):
            yield index, pad_or_trim(model.feature_extractor(chunk)[..., :-1])


def speech_chunks(audio: np.ndarray) -> list[np.ndarray]:
    """A clip of up to 30 s whole; a longer one cut at silences into chunks of 30 s at most, as the pipeline cuts."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    if len(audio) <= WINDOW_S * SAMPLE_RATE:
        return [audio]
    vad = VadOptions(max_speech_duration_s=WINDOW_S, min_silence_duration_ms=160)
    chunks, _ = collect_chunks(audio, get_speech_timestamps(audio, vad), max_duration=WINDOW_S)
    return [chunk for chunk in chunks if len(chunk)]


def batches(pairs: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Consecutive groups of `size`, the last one shorter."""
    batch: list[tuple[int, np.ndarray]] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def decode_windows(model: Any, features: np.ndarray) -> list[str]:
    """The text of each window from one encode and one generate call.

    The options are BatchedInferencePipeline's (no timestamps, no previous text, one temperature, language given),
    so the prompt is the same for every window, whichever recording it comes from.
    """
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=LANGUAGE)
    prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
    results = model.model.generate(
        model.encode(features),
        [prompt] * len(features),
        beam_size=BEAM_SIZE,
        max_length=model.max_length,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
    )
    return [tokenizer.decode(result.sequences_ids[0]) for result in results]


def timed(mode: Callable[[Setup, Any, Sequence[Item]], list[str]]) -> Callable[..., tuple[list[str], float]]:
    """A mode on the shared model, with its wall time."""

    def run(setup: Setup, model: Any, items: Sequence[Item]) -> tuple[list[str], float]:
        started = time.perf_counter()
        texts = mode(setup, model, items)
        return texts, time.perf_counter() - started

    return run


def replicas(setup: Setup, model: Any, items: Sequence[Item]) -> tuple[list[str], float]:
    """One model with --replicas workers, and as many threads taking items from the executor's queue."""
    shared = setup.load(share=setup.replicas, workers=setup.replicas)
    with ThreadPoolExecutor(setup.replicas) as pool:
        list(pool.map(lambda _: transcribe_one(shared, warm_audio(items)), range(setup.replicas)))
        started = time.perf_counter()
        texts = list(pool.map(lambda item: transcribe_one(shared, item.audio), items))
        return texts, time.perf_counter() - started


def replicas_processes(setup: Setup, model: Any, items: Sequence[Item]) -> tuple[list[str], float]:
    """--replicas processes, each with its own model, taking items from the pool's queue."""
    context = multiprocessing.get_context("spawn")  # a forked child would inherit CTranslate2's threads half-made
    barrier = context.Barrier(setup.replicas)
    with context.Pool(setup.replicas, initializer=_process_load, initargs=(setup, barrier)) as pool:
        pool.map(_process_warm, [warm_audio(items)] * setup.replicas, chunksize=1)
        started = time.perf_counter()
        texts = pool.map(_process_transcribe, [item.audio for item in items], chunksize=1)
        wall = time.perf_counter() - started
        pool.close()
        pool.join()
    return texts, wall


_process: dict[str, Any] = {}


def _process_load(setup: Setup, barrier: Any) -> None:
    """A pool process's model, loaded once, with its share of the CPU threads."""
    _process["model"], _process["barrier"] = setup.load(share=setup.replicas), barrier


def _process_warm(audio: np.ndarray) -> None:
    """Every process takes exactly one warm-up: none leaves the barrier before all have loaded."""
    _process["barrier"].wait()
    transcribe_one(_process["model"], audio)


def _process_transcribe(audio: np.ndarray) -> str:
    return transcribe_one(_process["model"], audio)


def warm_audio(items: Sequence[Item]) -> np.ndarray:
    """The first seconds of the set: enough for a model's first call, which is slower, to stay out of the timing."""
    return items[0].audio[: WARM_S * SAMPLE_RATE]


def warm(model: Any, items: Sequence[Item]) -> None:
    """The shared model's first decode and the VAD model's loading, before any clock starts."""
    from faster_whisper.vad import get_speech_timestamps

    transcribe_one(model, warm_audio(items))
    get_speech_timestamps(warm_audio(items))


ModeRunner = Callable[[Setup, Any, Sequence[Item]], tuple[list[str], float]]
MODE_RUNNERS: dict[str, ModeRunner] = {
    "sequential": timed(sequential),
    "batched-file": timed(batched_file),
    "batched-clips": timed(batched_clips),
    "replicas": replicas,
    "replicas-processes": replicas_processes,
}


# --- the sets ---


def decode(path: Path) -> np.ndarray:
    """16 kHz mono samples, as faster-whisper decodes them."""
    from faster_whisper import decode_audio

    samples: np.ndarray = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
    return samples


def long_items(quick: bool) -> list[Item]:
    """The long files that exist, with their references; only the 3.7-minute one with --quick."""
    paths = [path for path in LONG_FILES[:1] if path.exists()] if quick else [p for p in LONG_FILES if p.exists()]
    return [Item(path.stem, decode(path), normalise(path.with_suffix(".txt").read_text(), LANGUAGE)) for path in paths]


def clip_items(count: int) -> list[Item]:
    """`count` short English clips with exact or scripted references, spread over the manifest's sources."""
    short = [clip for clip in load_manifest(DATA / "manifest.tsv") if clip.duration and clip.duration <= WINDOW_S]
    chosen = Filters(
        languages=frozenset({LANGUAGE}), ref_qualities=frozenset({"exact", "script"}), max_clips=count
    ).apply(short)
    return [Item(clip.id, decode(clip.audio), normalise(clip.reference, LANGUAGE)) for clip in chosen]


def load_set(name: str, clips: int, quick: bool) -> list[Item]:
    """A named set's items."""
    return long_items(quick) if name == "long" else clip_items(clips)


# --- measuring and reporting ---


def measure(mode: str, set_name: str, items: Sequence[Item], setup: Setup, model: Any, runs: int) -> Row:
    """A mode on a set, `runs` times; WER from the first run."""
    row = Row(mode, set_name, len(items), sum(item.seconds for item in items))
    for run in range(runs):
        texts, wall = MODE_RUNNERS[mode](setup, model, items)
        row.walls.append(wall)
        if run == 0:
            hypotheses = [normalise(text, LANGUAGE) for text in texts]
            row.wer = error_rates([item.reference for item in items], hypotheses)[0]
    print(f"{mode} on {set_name}: {row.audio_s:.1f} s of audio in {row.wall_s:.1f} s, WER {row.wer:.3f}", flush=True)
    return row


def describe_device(device: str) -> str:
    """The GPU's name from nvidia-smi, or the CPU's model and core count."""
    if device == "cuda" and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
        found = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip().splitlines()
        if found:
            return f"GPU: {found[0]}"
    if device == "cuda":
        import ctranslate2

        return f"GPU: {ctranslate2.get_cuda_device_count()} CUDA device(s)"
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, where there is one."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def table(rows: Sequence[Row], header: str) -> str:
    """The rows as markdown, each with its ratio to sequential on the same set."""
    baseline = {row.set: row.xrt for row in rows if row.mode == "sequential"}
    lines = [
        header,
        "",
        "| mode | set | items | audio s | wall s | x real time | vs sequential | WER % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.xrt / baseline[row.set]:.2f}" if row.set in baseline else "-"
        lines.append(
            f"| {row.mode} | {row.set} | {row.items} | {row.audio_s:.1f} | {row.wall_s:.2f} | {row.xrt:.1f} "
            f"| {ratio} | {row.wer * 100:.2f} |"
        )
    return "\n".join(lines) + "\n"


def describe_run(setup: Setup, model_name: str, runs: int) -> str:
    """The table's heading: what ran where."""
    threads = f", {setup.cpu_threads} CPU threads" if setup.device == "cpu" else ""
    return (
        f"## Device benchmark: {model_name} on {describe_device(setup.device)}\n\n"
        f"device {setup.device}, compute type {setup.compute_type}{threads}, batch {setup.batch}, "
        f"replicas {setup.replicas}, beam {BEAM_SIZE}, median of {runs} run(s), "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def build_setup(args: argparse.Namespace, settings: Settings) -> Setup:
    """The run's model and device from the arguments, with the worker's defaults."""
    device = pick_device(args.device or settings.device)
    path = resolve_model(args.model, settings.models, settings.allow_download)
    return Setup(
        model_path=str(path),
        device=device,
        compute_type=pick_compute_type(args.compute_type or settings.compute_type, device),
        cpu_threads=args.cpu_threads or os.cpu_count() or 1,
        batch=args.batch or (16 if device == "cuda" else 8),
        replicas=args.replicas,
    )


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base", help="a model name (tiny.en, base, ...) or a model directory")
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: WHISPERQ_DEVICE)")
    parser.add_argument("--compute-type", default=None, help="default: WHISPERQ_COMPUTE_TYPE, else int8/float16")
    parser.add_argument("--cpu-threads", type=int, default=0, help="CPU threads in all (default: every core)")
    parser.add_argument("--batch", type=int, default=0, help="windows per batch (default: 8 on CPU, 16 on GPU)")
    parser.add_argument("--replicas", type=int, default=2, help="model replicas in the replica modes")
    parser.add_argument("--clips", type=int, default=200, help="short English clips in the clips set")
    parser.add_argument("--quick", action="store_true", help="only the 3.7-minute long file")
    parser.add_argument("--runs", type=int, default=1, help="runs per figure; the median is shown")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--out", type=Path, default=Path("benchmark-results") / "device.md")
    args = parser.parse_args(argv)
    for option, known in (("modes", MODES), ("sets", SETS)):
        unknown = set(getattr(args, option).split(",")) - set(known)
        if unknown:
            parser.error(f"unknown --{option}: {', '.join(sorted(unknown))} (known: {', '.join(known)})")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run every chosen mode on every chosen set; print the table, write it to --out and return it."""
    args = parse(argv)
    setup = build_setup(args, Settings())
    model = setup.load()
    rows = []
    for set_name in args.sets.split(","):
        items = load_set(set_name, args.clips, args.quick)
        warm(model, items)
        rows += [measure(mode, set_name, items, setup, model, args.runs) for mode in args.modes.split(",")]
    report = table(rows, describe_run(setup, args.model, args.runs))
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return report


if __name__ == "__main__":
    main()

"""Throughput of this code against an earlier commit's, measured side by side on the same machine in one run.

python -m benchmark.throughput [--baseline REV] [--model tiny.en] [--runs 3] [--clips 60] [--only mixed,long,...]

The earlier commit (--baseline, default the commit before long files were cut into one-window chunks) is
exported from git into a scratch folder; its stacks run from there with its own defaults, ours from here.

Every task is polled every half second.

- mixed: the 16-minute file and --clips short English dev clips, submitted together at normal priority, one
  worker: audio seconds per wall second, ours over the baseline's; WER of the long file and of the clips.
- long: the 16-minute file alone on one worker: ours over the baseline's unsplit time (the baseline with
  splitting off), and ours on two workers (one CPU thread, one copy of the model each) over ours on one; beside
  it the machine's own ceiling: the raw engine decoding the same chunks in two processes of one thread over one.
- ceiling (also run by long): the raw engine's own two-process scaling on the same chunks.
- streamed (not run unless asked): the 16-minute file alone, cut whole before its chunks are queued (the commit
  before they were queued as they are cut) against this code, on one worker, one of one thread, and two of one;
  and the seconds from upload to the first segment decoded, of the 16-minute file and a 2-hour one.
- threads (not run unless asked): the mixed load on this code with 2 CPU threads per copy of the model against 4.
- memory: peak worker memory (VmHWM) splitting the 16-minute file, and a 2-hour file made of it joined 8 times.
Every figure is the median of --runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.dataset import Filters, load_manifest
from benchmark.longfiles import DATA, LONG, Client
from benchmark.scoring import error_rates, normalise
from benchmark.service import local_service
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The last commit before long files were cut into one-window chunks decoded as windows.
BASELINE = "b59e3b7"
# How often the harness's client asks after a task. Four tasks polled at once every 50 ms (80 requests a second)
# take a share of the two cores from the worker, and the baseline has no long poll to wait on instead.
POLL_S = 0.5
# An earlier commit's defaults where ours differ.
DEFAULTS_OF: dict[str, dict[str, Any]] = {BASELINE: {"chunk_target_s": 15.0}}
# The last commit whose split cut every chunk of a file before it queued any.
WHOLE_SPLIT = "dc8fd06"


@contextmanager
def code_of(revision: str | None) -> Iterator[None]:
    """Run what starts inside from `revision`'s tree (exported by git), or from this tree for None."""
    if revision is None:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="whisperq-baseline-") as tree:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        here, path = Path.cwd(), os.environ.get("PYTHONPATH")
        os.chdir(tree)  # `python -m whisperq` takes the package from the working folder first
        os.environ["PYTHONPATH"] = tree
        try:
            yield
        finally:
            os.chdir(here)
            if path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = path


@contextmanager
def stack(revision: str | None, model: str, workers: int, **overrides: Any) -> Iterator[Any]:
    """A fresh local stack of `revision`'s code (ours for None) with these settings."""
    defaults = DEFAULTS_OF.get(revision, {}) if revision is not None else {}
    settings = Settings().model_copy(update={**defaults, **overrides})
    with code_of(revision), local_service(settings, model, workers) as service:
        yield service


def short_clips(count: int) -> list[Any]:
    """`count` short English dev clips with exact or scripted references, spread over the sources."""
    clips = [c for c in load_manifest(DATA / "manifest.tsv") if c.duration and c.duration <= 30]
    return Filters(languages=frozenset({"en"}), ref_qualities=frozenset({"exact", "script"}), max_clips=count).apply(
        clips
    )


def mixed_once(revision: str | None, model: str, clips: list[Any], **overrides: Any) -> dict[str, float]:
    """One run of the mixed load: audio per wall second, and the WER of the long file and of the clips."""
    with stack(revision, model, 1, **overrides) as service:
        client = Client(service.url, model, POLL_S)
        started = time.perf_counter()
        paths = [LONG, *(clip.audio for clip in clips)]
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda path: client.submit(path, priority="normal")[0], paths))
            tasks = list(pool.map(client.wait, ids))
        wall = time.perf_counter() - started
    audio = sum(task["duration"] for task in tasks)
    long_reference = normalise(LONG.with_suffix(".txt").read_text(), "en")
    long_wer = error_rates([long_reference], [normalise(tasks[0]["result"]["text"], "en")])[0]
    references = [normalise(clip.reference, "en") for clip in clips]
    clip_wer = error_rates(references, [normalise(task["result"]["text"], "en") for task in tasks[1:]])[0]
    return {"audio_per_s": audio / wall, "wall": wall, "long_wer": long_wer * 100, "clips_wer": clip_wer * 100}


def mixed(baseline: str, model: str, runs: int, count: int) -> None:
    clips = short_clips(count)
    print(f"\n## Mixed load: {LONG.name} + {len(clips)} short dev clips at normal priority, one worker ({model})\n")
    print("| code | audio s per wall s (median) | runs | WER long % | WER clips % |")
    print("|---|---|---|---|---|")
    medians = {}
    for label, revision in (("baseline " + baseline, baseline), ("this", None)):
        results = [mixed_once(revision, model, clips) for _ in range(runs)]
        medians[label] = statistics.median(r["audio_per_s"] for r in results)
        shown = ", ".join(f"{r['audio_per_s']:.2f}" for r in results)
        long_wer = statistics.median(r["long_wer"] for r in results)
        clips_wer = statistics.median(r["clips_wer"] for r in results)
        print(f"| {label} | {medians[label]:.2f} | {shown} | {long_wer:.2f} | {clips_wer:.2f} |")
    print(f"\nthis over baseline: **{medians['this'] / medians['baseline ' + baseline]:.2f}×**")


def threads(model: str, runs: int, count: int) -> None:
    """The mixed load on this code with 2 CPU threads per copy of the model (the default on two cores) against
    CTranslate2's own 4, runs alternating."""
    clips = short_clips(count)
    print(f"\n## Mixed load on this code by CPU threads per copy of the model ({model}), runs alternating\n")
    print("| CPU threads | audio s per wall s (median) | runs |")
    print("|---|---|---|")
    results: dict[int, list[float]] = {2: [], 4: []}
    for _ in range(runs):
        for count_of_threads, figures in results.items():
            figures.append(mixed_once(None, model, clips, cpu_threads=count_of_threads)["audio_per_s"])
    for count_of_threads, figures in results.items():
        shown = ", ".join(f"{figure:.2f}" for figure in figures)
        print(f"| {count_of_threads} | {statistics.median(figures):.2f} | {shown} |")
    print(f"\n2 threads over 4: **{statistics.median(results[2]) / statistics.median(results[4]):.2f}×**")


def timed(revision: str | None, model: str, workers: int, path: Path, runs: int, **overrides: Any) -> list[float]:
    """End-to-end seconds of `path` alone, `runs` times on one fresh stack."""
    with stack(revision, model, workers, **overrides) as service:
        client = Client(service.url, model, POLL_S)
        return [client.run(path, priority="normal")[1] for _ in range(runs)]


def long_alone(baseline: str, model: str, runs: int) -> None:
    print(f"\n## {LONG.name} alone ({model}), median of {runs}\n")
    print("| code | path | workers (CPU threads each) | seconds (median) | runs |")
    print("|---|---|---|---|---|")
    rows: list[tuple[str, str | None, str, int, dict[str, Any]]] = [
        ("baseline " + baseline, baseline, "unsplit", 1, {"split_after_s": 0.0, "cpu_threads": 0}),
        ("this", None, "split", 1, {"cpu_threads": 0}),
        ("this", None, "split", 1, {"cpu_threads": 1, "replicas": 1}),
        ("this", None, "split", 2, {"cpu_threads": 1, "replicas": 1}),
    ]
    medians = []
    for label, revision, path, workers, overrides in rows:
        times = timed(revision, model, workers, LONG, runs, **overrides)
        medians.append(statistics.median(times))
        threads = f"{overrides['cpu_threads']}, one copy" if overrides["cpu_threads"] else "default"
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {label} | {path} | {workers} ({threads}) | {medians[-1]:.1f} | {shown} |")
    print(f"\nthis, one worker, over the baseline unsplit: **{medians[1] / medians[0]:.2f}×**")
    print(f"this, two workers of one thread and one copy over one: **{medians[3] / medians[2]:.2f}×**")
    ceiling(model, runs)


def streamed(model: str, runs: int) -> None:
    """The 16-minute file alone, split by the commit whose split cut the whole file before it queued a chunk and by
    this code (each chunk queued once its cut is settled): on one worker with its defaults, on one of one CPU thread
    and one copy, and on two such; a fresh stack for every run, runs alternating."""
    print(f"\n## {LONG.name} alone, the whole file cut before its chunks are queued or as it is decoded ({model})\n")
    print("| code | fleet | seconds (median) | runs |")
    print("|---|---|---|---|")
    codes = ((f"cut whole first ({WHOLE_SPLIT})", WHOLE_SPLIT), ("cut as it is decoded (this)", None))
    single = {"cpu_threads": 1, "replicas": 1}
    fleets: dict[str, tuple[int, dict[str, Any]]] = {
        "one worker (defaults)": (1, {}),
        "one worker, one thread": (1, single),
        "two workers, one thread each": (2, single),
    }
    times: dict[tuple[str, str], list[float]] = {(code, fleet): [] for code, _ in codes for fleet in fleets}
    for _ in range(runs):
        for code, revision in codes:
            for fleet, (workers, overrides) in fleets.items():
                times[(code, fleet)] += timed(revision, model, workers, LONG, 1, **overrides)
    medians = {key: statistics.median(figures) for key, figures in times.items()}
    for (code, fleet), figures in times.items():
        shown = ", ".join(f"{figure:.1f}" for figure in figures)
        print(f"| {code} | {fleet} | {medians[(code, fleet)]:.1f} | {shown} |")
    (before, _), (now, _) = codes
    for fleet in fleets:
        print(f"\n{fleet}, this over the whole-file cut: **{medians[(now, fleet)] / medians[(before, fleet)]:.2f}×**")
    for code in (before, now):
        ratio = medians[(code, "two workers, one thread each")] / medians[(code, "one worker, one thread")]
        print(f"\n{code}: two workers of one thread over one: **{ratio:.2f}×**")
    first_words(codes, model, runs)


def first_words(codes: tuple[tuple[str, str | None], ...], model: str, runs: int) -> None:
    """Seconds from a long file's upload to its first progress (a first segment decoded), one worker with its
    defaults, a fresh stack for every run: the 16-minute file and a 2-hour one (it joined 8 times)."""
    print(f"\n### From upload to the first segment decoded, one worker ({model}), median of {runs}\n")
    print("| code | file | seconds (median) | runs |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="whisperq-long-") as folder:
        files = (LONG, joined(LONG, 8, Path(folder)))
        times: dict[tuple[str, str], list[float]] = {(code, path.name): [] for code, _ in codes for path in files}
        for _ in range(runs):
            for code, revision in codes:
                for path in files:
                    times[(code, path.name)].append(first_segment_s(revision, model, path))
    for (code, name), figures in times.items():
        shown = ", ".join(f"{figure:.2f}" for figure in figures)
        print(f"| {code} | {name} | {statistics.median(figures):.2f} | {shown} |")


def first_segment_s(revision: str | None, model: str, path: Path) -> float:
    """Seconds from the end of the upload to the task's first progress, on a fresh stack; the task is then cancelled."""
    with stack(revision, model, 1, max_media_duration_s=4 * 3600) as service:
        client = Client(service.url, model)
        task_id, _ = client.submit(path, priority="normal")
        started = time.perf_counter()
        while client.http.get(f"/v1/tasks/{task_id}").json()["progress"] <= 0:
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        client.http.post(f"/v1/tasks/{task_id}/cancel")
    return seconds


def ceiling(model: str, runs: int) -> None:
    """The raw engine (no service) decoding the chunks the service cuts from the 16-minute file, one window at a
    time, in one process of one CPU thread and in two side by side (chunks dealt alternately): how far two cores of
    this machine go when nothing but decoding is shared out."""
    import multiprocessing

    print(f"\n### The raw engine on the same chunks, one thread per process ({model}), runs alternating\n")
    print("| processes | decode s (median) | runs |")
    print("|---|---|---|")
    spawn = multiprocessing.get_context("spawn")
    results: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="whisperq-chunks-") as folder:
        paths = [str(path) for path in cut_chunks(Path(folder))]
        for _ in range(runs):
            for processes, figures in results.items():
                figures.append(decoded_in(spawn, model, paths, processes))
    for processes, figures in results.items():
        shown = ", ".join(f"{figure:.1f}" for figure in figures)
        print(f"| {processes} | {statistics.median(figures):.1f} | {shown} |")
    ratio = statistics.median(results[2]) / statistics.median(results[1])
    print(f"\nraw engine, two processes over one: **{ratio:.2f}×**")


def cut_chunks(folder: Path) -> list[Path]:
    """The 16-minute file cut as a worker cuts it (default settings), one WAV file per chunk in `folder`."""
    from worker import spooling

    settings = Settings()
    raw, paths = folder / "audio.raw", list[Path]()
    for spooled, plan in spooling.cut(
        LONG, settings.max_media_duration_s, raw, settings.chunk_target_s, settings.chunk_pause_s
    ):
        chunks = spooling.write_chunks(spooled, plan, lambda index: folder / f"{index}.wav", first=len(paths))
        paths += [folder / f"{chunk.index}.wav" for chunk in chunks]
    return paths


def decoded_in(context: Any, model: str, paths: list[str], processes: int) -> float:
    """Wall seconds for `processes` processes, each with its own copy of the model on one thread, to decode
    `paths` dealt among them, counted from when every copy is loaded."""
    ready = context.Barrier(processes + 1)
    workers = [
        context.Process(target=decode_share, args=(model, paths[index::processes], ready)) for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    if any(worker.exitcode for worker in workers):
        raise RuntimeError("a decoding process failed")
    return time.perf_counter() - started


def decode_share(model: str, paths: list[str], ready: Any) -> None:
    """In a process of its own: load `model` on one CPU thread, wait for the others, decode each chunk."""
    from shared.enums import TaskType
    from shared.schemas import TranscribeOptions
    from worker import engine, splitting, windows

    loaded = engine.load_engine(Settings(model=model, cpu_threads=1))
    options = TranscribeOptions(language="en")
    ready.wait()
    for path in paths:
        samples = splitting.decode(Path(path), windows.WINDOW_S + 1)
        windows.decode(loaded, [windows.Window(samples, TaskType.TRANSCRIBE, "en", options)])


def joined(path: Path, times: int, folder: Path) -> Path:
    """A FLAC file of `path` played `times` times in a row."""
    out = folder / f"{path.stem}_x{times}.flac"
    import av

    with av.open(str(out), "w") as sink:
        stream = sink.add_stream("flac", rate=16000, layout="mono")
        for _ in range(times):
            with av.open(str(path)) as source:
                resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
                for frame in source.decode(audio=0):
                    frame.pts = None
                    for part in resampler.resample(frame):
                        sink.mux(stream.encode(part))
        sink.mux(stream.encode(None))
    return out


def memory(model: str) -> None:
    print(f"\n## Peak worker memory splitting long files ({model}, one worker)\n")
    print("| file | audio min | peak worker MiB | its peak before the last chunk, MiB | seconds |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="whisperq-long-") as folder:
        two_hours = joined(LONG, 8, Path(folder))
        peaks = []
        for path in (LONG, two_hours):
            with stack(None, model, 1, max_media_duration_s=4 * 3600) as service:
                client = Client(service.url, model)
                started = time.perf_counter()
                task_id, _ = client.submit(path, priority="normal")
                before = peak_before_last_chunk(client, task_id, service.worker_peak_memory_mb)
                task = client.wait(task_id)
                seconds = time.perf_counter() - started
                peaks.append(service.worker_peak_memory_mb())
            print(f"| {path.name} | {task['duration'] / 60:.1f} | {peaks[-1]:.0f} | {before:.0f} | {seconds:.1f} |")
    print(f"\n2-hour over 16-minute peak: **{peaks[1] / peaks[0]:.2f}×**")


def peak_before_last_chunk(client: Client, task_id: str, peak: Any) -> float:
    """The worker's peak so far when all chunks but the last are done: the decoding's share, before the stitch."""
    while True:
        task = client.http.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in ("completed", "failed", "cancelled") or (
            task.get("chunks") and task["chunks_done"] >= task["chunks"] - 1
        ):
            return float(peak())
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--only", default="mixed,long,memory")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    if "mixed" in chosen:
        mixed(args.baseline, args.model, args.runs, args.clips)
    if "threads" in chosen:
        threads(args.model, args.runs, args.clips)
    if "long" in chosen:
        long_alone(args.baseline, args.model, args.runs)
    if "ceiling" in chosen:
        ceiling(args.model, args.runs)
    if "streamed" in chosen:
        streamed(args.model, args.runs)
    if "memory" in chosen:
        memory(args.model)


if __name__ == "__main__":
    main()

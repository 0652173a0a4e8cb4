"""Long files, split and fanned out against the unsplit path: priority, scaling and accuracy, as printed figures.

python -m benchmark.longfiles [--model tiny.en] [--runs 3] [--cpu-threads 1]
    [--only priority,scaling,accuracy,batched,pauses]

- priority: one worker busy on the 16-minute file at low priority; a short clip sent at high priority
  every few seconds. Its time to completed, over its time on an idle worker (median and worst); with the
  priority lane, without it, and unsplit.
- scaling: the 16-minute file with one and with two workers (each with --cpu-threads, the way each
  worker gets one GPU), against one worker on the unsplit path; median of --runs.
- accuracy: WER of the stitched and the unsplit result on both long files (split after 60 s, so the
  3.7-minute file is split too).
- batched: the worker's engine on the 3.7-minute file with WHISPERQ_BATCH_SIZE off and on.
- pauses: the 16-minute file on one worker unsplit, split with WHISPERQ_CHUNK_PAUSE_S 0 (every pause kept whole),
  and split with its default (long pauses shortened); three stacks side by side, runs alternating: time, windows
  and WER.
Each figure comes from fresh local stacks (embedded Redis, API, workers) started here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmark.scoring import error_rates, normalise
from benchmark.service import local_service
from shared.settings import Settings

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LONG = DATA / "long" / "asterisk_en_dev_concat.flac"
LONG_FILES = [DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac", LONG]
CLIP = DATA / "audio" / "faster_whisper" / "jfk.flac"
UNSPLIT = {"split_after_s": 0.0}
NO_LANE = {"priority_lane": "off"}


class Client:
    """Submits files to a running stack and waits for them."""

    def __init__(self, url: str, model: str, poll_s: float = 0.05) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        self.model = model
        self.poll_s = poll_s  # how often `wait` asks after a task

    def submit(self, path: Path, **fields: str) -> tuple[str, float]:
        """The task id, and how long the upload took."""
        started = time.perf_counter()
        with path.open("rb") as handle:
            data = {"model": self.model, "language": "en", **fields}
            response = self.http.post("/v1/tasks", files={"file": (path.name, handle)}, data=data)
        response.raise_for_status()
        return str(response.json()["id"]), time.perf_counter() - started

    def wait(self, task_id: str) -> dict[str, Any]:
        while True:
            task: dict[str, Any] = self.http.get(f"/v1/tasks/{task_id}").json()
            if task["status"] in ("completed", "failed", "cancelled"):
                if task["status"] != "completed":
                    raise SystemExit(f"task {task_id} {task['status']}: {task.get('error')}")
                return task
            time.sleep(self.poll_s)

    def run(self, path: Path, **fields: str) -> tuple[dict[str, Any], float]:
        """A finished task and its time end to end: upload, then the service's span from created to finished."""
        task_id, upload_s = self.submit(path, **fields)
        task = self.wait(task_id)
        return task, upload_s + span(task)


def span(task: dict[str, Any]) -> float:
    """Seconds from a task's creation to its end, by the service's own clock."""
    return (datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["created_at"])).total_seconds()


def stack(settings: Settings, model: str, workers: int, **overrides: Any) -> Any:
    return local_service(settings.model_copy(update=overrides), model, workers)


def priority(settings: Settings, model: str, samples: int) -> None:
    """A high clip's time behind a long low file, over its solo time: with the priority lane (the default on CPU),
    without it, and on the unsplit path without it."""
    target = settings.chunk_target_s
    print(f"\n## Priority: {CLIP.name} at high behind {LONG.name} at low, one worker ({model}, chunks {target:g} s)\n")
    print("| path | solo s (median) | behind the long file s (median / worst) | ratio median | ratio worst | each s |")
    print("|---|---|---|---|---|---|")
    paths: list[tuple[str, dict[str, Any]]] = [
        ("split, lane", {}),
        ("split, no lane", NO_LANE),
        ("unsplit, no lane", {**UNSPLIT, **NO_LANE}),
    ]
    for label, overrides in paths:
        with stack(settings, model, 1, **overrides) as svc:
            client = Client(svc.url, model)
            solo = statistics.median(client.run(CLIP, priority="high")[1] for _ in range(samples))
            long_id, _ = client.submit(LONG, priority="low")
            while client.http.get(f"/v1/tasks/{long_id}").json()["progress"] <= 0:
                time.sleep(0.1)
            behind = []
            for index in range(samples if label != "unsplit, no lane" else 1):
                time.sleep(0.37 * (index % 4))  # arrive at different points of a window
                behind.append(client.run(CLIP, priority="high")[1])
            client.http.post(f"/v1/tasks/{long_id}/cancel")
        worst, middle = max(behind), statistics.median(behind)
        each = ", ".join(f"{t:.2f}" for t in behind)
        ratios = f"{middle / solo:.2f} | {worst / solo:.2f}"
        print(f"| {label} | {solo:.2f} | {middle:.2f} / {worst:.2f} | {ratios} | {each} |")


def scaling(settings: Settings, model: str, runs: int, threads: int) -> None:
    """The 16-minute file on one and two workers, split, and on one worker unsplit."""
    print(f"\n## Scaling: {LONG.name} ({model}, {threads} CPU thread(s) per worker), median of {runs}\n")
    print("| path | workers | end to end s (median) | runs | vs split on 1 worker |")
    print("|---|---|---|---|---|")
    rows = [("unsplit", 1, UNSPLIT), ("split", 1, {}), ("split", 2, {})]
    medians: dict[tuple[str, int], float] = {}
    for label, workers, overrides in rows:
        with stack(settings, model, workers, cpu_threads=threads, **overrides) as svc:
            client = Client(svc.url, model)
            times = [client.run(LONG, priority="normal")[1] for _ in range(runs)]
        medians[(label, workers)] = statistics.median(times)
        ratio = medians[(label, workers)] / medians.get(("split", 1), medians[(label, workers)])
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {label} | {workers} | {medians[(label, workers)]:.1f} | {shown} | {ratio:.2f} |")
    print(f"\ntwo workers / one worker (split): {medians[('split', 2)] / medians[('split', 1)]:.2f}")
    print(f"two workers split / one worker unsplit: {medians[('split', 2)] / medians[('unsplit', 1)]:.2f}")


def accuracy(settings: Settings, model: str) -> None:
    """WER of the stitched and the unsplit result of each long file."""
    target = settings.chunk_target_s
    print(f"\n## Accuracy: stitched against unsplit ({model}, split after 60 s, chunks of at most {target:g} s)\n")
    print("| file | audio s | chunks | WER unsplit % | WER stitched % | difference (points) |")
    print("|---|---|---|---|---|---|")
    results: dict[str, dict[Path, dict[str, Any]]] = {}
    for label, overrides in (("unsplit", UNSPLIT), ("split", {"split_after_s": 60.0})):
        with stack(settings, model, 1, **overrides) as svc:
            client = Client(svc.url, model)
            results[label] = {path: client.run(path)[0] for path in LONG_FILES}
    for path in LONG_FILES:
        reference = normalise(path.with_suffix(".txt").read_text(), "en")
        whole, split = results["unsplit"][path], results["split"][path]
        wer_whole = error_rates([reference], [normalise(whole["result"]["text"], "en")])[0] * 100
        wer_split = error_rates([reference], [normalise(split["result"]["text"], "en")])[0] * 100
        print(
            f"| {path.name} | {whole['duration']:.1f} | {split['chunks']} | {wer_whole:.2f} | {wer_split:.2f} "
            f"| {wer_split - wer_whole:+.2f} |"
        )


def pauses(settings: Settings, model: str, runs: int) -> None:
    """The 16-minute file on one worker unsplit, split with every pause kept whole, and split with long pauses
    shortened (the default), three stacks side by side, runs alternating: time, windows and WER."""
    shortened = settings.chunk_pause_s or 0.3
    paths = {
        "unsplit": UNSPLIT,
        "split, pauses kept whole": {"chunk_pause_s": 0.0},
        f"split, pauses of at most {shortened:g} s": {"chunk_pause_s": shortened},
    }
    print(f"\n## Pauses: {LONG.name} on one worker ({model}), median of {runs}, runs alternating\n")
    print("| path | windows | end to end s (median) | runs | WER % (median) | vs unsplit |")
    print("|---|---|---|---|---|---|")
    reference = normalise(LONG.with_suffix(".txt").read_text(), "en")
    results: dict[str, list[tuple[float, float, int]]] = {label: [] for label in paths}
    with ExitStack() as started:
        services = {label: started.enter_context(stack(settings, model, 1, **o)) for label, o in paths.items()}
        for _ in range(runs):
            for label, service in services.items():
                task, seconds = Client(service.url, model).run(LONG, priority="normal")
                wer = error_rates([reference], [normalise(task["result"]["text"], "en")])[0] * 100
                results[label].append((seconds, wer, task.get("chunks") or 0))
    base = statistics.median(t for t, _, _ in results["unsplit"])
    for label, measured in results.items():
        times = [t for t, _, _ in measured]
        middle, wer = statistics.median(times), statistics.median(w for _, w, _ in measured)
        shown = ", ".join(f"{t:.1f}" for t in times)
        windows = measured[0][2] or "–"
        print(f"| {label} | {windows} | {middle:.1f} | {shown} | {wer:.2f} | {middle / base:.2f} |")


def batched(settings: Settings, model: str, runs: int) -> None:
    """The worker's engine on the 3.7-minute file, one window at a time and in batches (BatchedInferencePipeline)."""
    from shared.enums import TaskType
    from shared.schemas import TranscribeOptions
    from worker.engine import load_engine, transcribe

    path = LONG_FILES[0]
    reference = normalise(path.with_suffix(".txt").read_text(), "en")
    print(f"\n## Batched decoding: {path.name} through the worker's engine ({model}), median of {runs}\n")
    print("| batch size | seconds (median) | real-time factor | WER % | vs one window at a time |")
    print("|---|---|---|---|---|")
    baseline = None
    for size in (0, 4, 8, 16):
        engine = load_engine(settings.model_copy(update={"model": model, "batch_size": size}))
        times, text, duration = [], "", 0.0
        for _ in range(runs):
            started = time.perf_counter()
            result = transcribe(engine, path, TaskType.TRANSCRIBE, TranscribeOptions(language="en"), lambda *_: None)
            times.append(time.perf_counter() - started)
            text, duration = result.text, result.duration
        seconds = statistics.median(times)
        baseline = baseline or seconds
        wer = error_rates([reference], [normalise(text, "en")])[0] * 100
        label = size if size > 1 else "off (0)"
        print(f"| {label} | {seconds:.1f} | {seconds / duration:.3f} | {wer:.2f} | {seconds / baseline:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--runs", type=int, default=3, help="runs per scaling figure, clips per priority figure")
    parser.add_argument("--cpu-threads", type=int, default=1, help="CPU threads per worker in the scaling runs")
    parser.add_argument("--only", default="priority,scaling,accuracy,batched")
    parser.add_argument("--chunk-target", type=float, default=None, help="WHISPERQ_CHUNK_TARGET_S for the stacks")
    args = parser.parse_args()
    settings = Settings()
    if args.chunk_target is not None:
        settings = settings.model_copy(update={"chunk_target_s": args.chunk_target})
    chosen = set(args.only.split(","))
    if "priority" in chosen:
        priority(settings, args.model, max(args.runs, 5))
    if "scaling" in chosen:
        scaling(settings, args.model, args.runs, args.cpu_threads)
    if "accuracy" in chosen:
        accuracy(settings, args.model)
    if "batched" in chosen:
        batched(settings, args.model, args.runs)
    if "pauses" in chosen:
        pauses(settings, args.model, args.runs)


if __name__ == "__main__":
    main()

"""`python -m benchmark` (or `whisperq bench`): accuracy and speed of models along the engine and api paths.

Modes:
  run       every model along every path; WER/CER per language, real-time factor, latency, throughput, memory
  overhead  the same clips through the raw engine and through the service, one at a time: ratio of wall times
  scaling   the same clips through the service with 1 and then 2 workers: ratio of throughputs
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmark.dataset import Clip, Filters, Skipped, load_folder, read_manifest
from benchmark.journal import Earlier, Journal, earlier, latest_run, load_command, new_run, save_command
from benchmark.report import Run, failure_notes, markdown, median_ratio, summaries, write_outputs
from benchmark.runners import ApiRunner, EngineRunner, Outcome, Runner, own_peak_memory_mb, run_all
from benchmark.service import local_service
from shared.settings import Settings

LONG_CLIP_S = 10.0
PATHS = ("engine", "api")


@dataclass
class Service:
    """Where the api path sends its clips, and how to read its workers' memory."""

    url: str
    peak_memory_mb: Any


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--manifest",
        type=Path,
        default=Path("../shared/data/manifest.tsv"),
        help="TSV, CSV or JSONL with audio, reference, language (default: %(default)s)",
    )
    source.add_argument("--folder", type=Path, help="a folder with audios/ and text-references/")
    parser.add_argument("--folder-language", help="language of a --folder set (default: detected)")
    parser.add_argument("--language", type=_csv, default=[], help="only these languages, e.g. en,es")
    parser.add_argument("--source", type=_csv, default=[], help="only clips whose source contains one of these")
    parser.add_argument("--ref-quality", type=_csv, default=[], help="only these reference qualities, e.g. exact")
    parser.add_argument("--min-duration", type=float, default=0.0, help="only clips at least this long (s)")
    parser.add_argument("--max-clips", type=int, help="at most this many clips, spread over the set")
    parser.add_argument("--max-per-language", type=int, help="at most this many clips of each language")
    parser.add_argument("--models", type=_csv, default=["tiny.en"], help="comma-separated (default: tiny.en)")
    parser.add_argument("--paths", type=_csv, default=["engine"], help="engine, api (default: engine)")
    parser.add_argument("--mode", choices=["run", "overhead", "scaling"], default="run")
    parser.add_argument("--url", help="a running service for the api path (default: start one here)")
    parser.add_argument("--api-key", help="API key for a service that requires one")
    parser.add_argument("--poll-s", type=float, default=0.25, help="seconds between status polls on the api path")
    parser.add_argument("--workers", type=int, default=1, help="workers of the service started here")
    parser.add_argument("--concurrency", type=int, default=1, help="clips in flight on the api path")
    parser.add_argument("--repeat", type=int, default=3, help="runs of overhead and scaling; the median is kept")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="where results are written")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="FOLDER",
        help="go on with a run that stopped (default: the newest under --out), with its arguments; "
        "clips it measured are not run again",
    )
    return parser


def arguments(argv: list[str]) -> argparse.Namespace:
    """The arguments; with --resume, those of the stopped run (its folder in `resume`), which the command line's
    own override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is None:
        return args
    folder = Path(args.resume) if args.resume else latest_run(args.out)
    resumed = parser.parse_args(argv, namespace=parser.parse_args(load_command(folder)))
    resumed.resume = str(folder)
    return resumed


def run_folder(args: argparse.Namespace, argv: list[str]) -> Path:
    """Where the run writes: the resumed run's folder, or a new one that keeps the command for a later --resume."""
    if args.resume is not None:
        return Path(args.resume)
    folder = new_run(args.out)
    save_command(folder, argv)
    return folder


def select(args: argparse.Namespace) -> tuple[list[Clip], list[Skipped]]:
    """The clips to run, and the manifest rows that cannot be run."""
    clips, skipped = read_manifest(args.manifest) if not args.folder else (_folder(args), [])
    filters = Filters(
        languages=frozenset(args.language),
        sources=tuple(args.source),
        ref_qualities=frozenset(args.ref_quality),
        min_duration=args.min_duration,
        max_clips=args.max_clips,
        max_per_language=args.max_per_language,
    )
    return filters.apply(clips), skipped


def _folder(args: argparse.Namespace) -> list[Clip]:
    try:
        return load_folder(args.folder, args.folder_language)
    except ValueError as error:  # an unknown --folder-language, an audio file without a reference
        raise SystemExit(str(error)) from None


def for_model(clips: Sequence[Clip], model: str) -> list[Clip]:
    """English-only models get the English (or unlabelled) clips only."""
    return [clip for clip in clips if not model.endswith(".en") or clip.language in (None, "en")]


@contextmanager
def service(args: argparse.Namespace, settings: Settings, model: str, workers: int) -> Iterator[Service]:
    """The given --url, or a stack started here for the model."""
    if args.url:
        yield Service(url=args.url, peak_memory_mb=lambda: None)
        return
    with local_service(settings, model, workers) as local:
        yield Service(url=local.url, peak_memory_mb=local.worker_peak_memory_mb)


def measure(
    runner: Runner, clips: Sequence[Clip], concurrency: int, memory: Any, journal: Journal | None = None
) -> Run:
    """One batch along one path, with a progress bar; each outcome into the journal as it comes."""
    started = time.perf_counter()
    with tqdm(total=len(clips), desc=f"{runner.path} {runner.model}", unit="clip") as bar:

        def done(outcome: Outcome) -> None:
            if journal is not None:
                journal.record(outcome, time.perf_counter() - started)
            bar.update()

        outcomes, wall = run_all(runner, clips, concurrency, done)
    return Run(
        path=runner.path,
        model=runner.model,
        outcomes=outcomes,
        wall_s=wall,
        concurrency=concurrency,
        peak_memory_mb=memory(),
    )


def mode_run(
    args: argparse.Namespace, settings: Settings, clips: Sequence[Clip], folder: Path
) -> tuple[list[Run], list[str]]:
    """Every model along every path, each clip journalled as it is measured; with --resume, only the clips the
    journal does not have yet."""
    runs, notes, done = [], [], earlier(folder, clips)
    with Journal(folder) as journal:
        for model in args.models:
            chosen = for_model(clips, model)
            if len(chosen) < len(clips):
                notes.append(f"{model}: {len(clips) - len(chosen)} clips in other languages left out (English-only)")
            for path in args.paths:
                part = done.get((path, model), Earlier())
                todo = [clip for clip in chosen if clip.id not in part.outcomes]
                runs.append(resumed(measure_path(args, settings, model, path, todo, journal), part, chosen))
                if part.outcomes:
                    notes.append(f"{path} {model}: {len(chosen) - len(todo)} clips measured before the resume")
    return runs, notes


def measure_path(
    args: argparse.Namespace, settings: Settings, model: str, path: str, clips: Sequence[Clip], journal: Journal
) -> Run:
    """The clips through one model along one path (nothing is loaded or started when there are none)."""
    if not clips:
        return Run(path=path, model=model, outcomes=[], wall_s=0.0, concurrency=1)
    if path == "engine":
        return measure(EngineRunner(model, settings), clips, 1, own_peak_memory_mb, journal)
    with (
        service(args, settings, model, args.workers) as svc,
        ApiRunner(svc.url, model, poll_s=args.poll_s, api_key=args.api_key) as api,
    ):
        return measure(api, clips, args.concurrency, svc.peak_memory_mb, journal)


def resumed(run: Run, part: Earlier, chosen: Sequence[Clip]) -> Run:
    """A run with what earlier sessions measured added: outcomes in clip order, their wall time added."""
    by_id = {**part.outcomes, **{o.clip.id: o for o in run.outcomes}}
    run.outcomes = [by_id[clip.id] for clip in chosen if clip.id in by_id]
    run.wall_s += part.total_wall_s()
    return run


def _latency_sum(run: Run, min_audio_s: float = 0.0) -> float:
    return sum(o.latency_s for o in run.outcomes if o.audio_s >= min_audio_s and o.error is None)


def _outside_processing(run: Run) -> float:
    """Share of the api path's wall time spent outside the engine: upload, queue, bookkeeping, polling."""
    good = [o for o in run.outcomes if o.error is None]
    wall = sum(o.latency_s for o in good)
    return (wall - sum(o.processing_s for o in good)) / wall if wall else float("nan")


def interleaved(engine: Runner, api: Runner, clips: Sequence[Clip], memory: Any) -> tuple[Run, Run]:
    """Each clip through the engine and then through the service, so that drift in the machine's speed
    (two cores, shared) falls on both paths alike."""
    pairs = []
    with tqdm(total=len(clips), desc=f"engine+api {engine.model}", unit="clip") as bar:
        for clip in clips:
            pairs.append((engine.run(clip), api.run(clip)))
            bar.update()
    direct = _sequential_run(engine, [d for d, _ in pairs], own_peak_memory_mb())
    served = _sequential_run(api, [s for _, s in pairs], memory())
    return direct, served


def _sequential_run(runner: Runner, outcomes: list[Outcome], peak_memory_mb: float | None) -> Run:
    """A run of clips taken one at a time: its wall time is the sum of their latencies."""
    return Run(
        path=runner.path,
        model=runner.model,
        outcomes=outcomes,
        concurrency=1,
        wall_s=sum(o.latency_s for o in outcomes),
        peak_memory_mb=peak_memory_mb,
    )


def _ratios(label: str, values: list[float]) -> str:
    return f"{label}: median {median_ratio(values):.3f} (runs: {', '.join(f'{v:.3f}' for v in values)})"


def mode_overhead(args: argparse.Namespace, settings: Settings, clips: Sequence[Clip]) -> tuple[list[Run], list[str]]:
    """Engine and api on each clip in turn, repeated; the median ratio of wall times."""
    runs, notes = [], []
    for model in args.models:
        chosen = for_model(clips, model)
        engine = EngineRunner(model, settings)
        all_ratios, long_ratios, outside = [], [], []
        with (
            service(args, settings, model, 1) as svc,
            ApiRunner(svc.url, model, poll_s=args.poll_s, api_key=args.api_key) as api,
        ):
            for _ in range(args.repeat):
                direct, served = interleaved(engine, api, chosen, svc.peak_memory_mb)
                runs += [direct, served]
                all_ratios.append(_latency_sum(served) / _latency_sum(direct))
                outside.append(_outside_processing(served))
                if _latency_sum(direct, LONG_CLIP_S):
                    long_ratios.append(_latency_sum(served, LONG_CLIP_S) / _latency_sum(direct, LONG_CLIP_S))
        notes.append(_ratios(f"overhead {model}: api/engine wall time, all clips", all_ratios))
        if long_ratios:
            notes.append(_ratios(f"overhead {model}: api/engine wall time, clips >= {LONG_CLIP_S:.0f} s", long_ratios))
        notes.append(_ratios(f"overhead {model}: share of api wall time outside the engine", outside))
    return runs, notes


def mode_scaling(args: argparse.Namespace, settings: Settings, clips: Sequence[Clip]) -> tuple[list[Run], list[str]]:
    """The same clips through 1 and then 2 workers at the same concurrency; the median throughput ratio."""
    runs, notes = [], []
    concurrency = max(args.concurrency, 4)
    for model in args.models:
        chosen = for_model(clips, model)
        throughput: dict[int, list[float]] = {1: [], 2: []}
        for workers in (1, 2):
            with (
                service(args, settings, model, workers) as svc,
                ApiRunner(svc.url, model, poll_s=args.poll_s, api_key=args.api_key) as api,
            ):
                for _ in range(args.repeat):
                    run = measure(api, chosen, concurrency, svc.peak_memory_mb)
                    run.path, run.extra = f"api-{workers}w", {"workers": workers}
                    runs.append(run)
                    throughput[workers].append(sum(o.audio_s for o in run.outcomes) / run.wall_s)
        ratios = [two / one for one, two in zip(throughput[1], throughput[2], strict=True)]
        notes.append(
            f"scaling {model}: throughput 2 workers / 1 worker at concurrency {concurrency}: median "
            f"{median_ratio(ratios):.3f} (runs: {', '.join(f'{r:.3f}' for r in ratios)}; audio s per s, "
            f"1 worker: {', '.join(f'{t:.2f}' for t in throughput[1])}; "
            f"2 workers: {', '.join(f'{t:.2f}' for t in throughput[2])})"
        )
    return runs, notes


MODES = {"overhead": mode_overhead, "scaling": mode_scaling}  # and "run", which also gets the run's folder


def skip_notes(skipped: Sequence[Skipped], listed: int = 20) -> list[str]:
    """The manifest rows left out, and why, in one line (the full list is in results.json)."""
    if not skipped:
        return []
    named = "; ".join(f"{row.id} ({row.reason})" for row in skipped[:listed])
    more = f"; and {len(skipped) - listed} more (results.json)" if len(skipped) > listed else ""
    return [f"skipped {len(skipped)} manifest rows: {named}{more}"]


def check(args: argparse.Namespace) -> None:
    """Refuse, before anything is measured, what the run could not finish."""
    if args.mode == "scaling" and args.url:
        raise SystemExit("scaling starts its own services; leave out --url")
    if args.resume is not None and args.mode != "run":
        raise SystemExit("--resume goes on with a run of --mode run only")
    unknown = [path for path in args.paths if path not in PATHS]
    if unknown:
        raise SystemExit(f"unknown path {unknown[0]!r}: use engine or api")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write its results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = arguments(argv)
    check(args)
    clips, skipped = select(args)
    for line in skip_notes(skipped):
        print(line, file=sys.stderr)
    if not clips:
        raise SystemExit("no clips match the filters")
    folder, settings = run_folder(args, argv), Settings()
    if args.mode == "run":
        runs, notes = mode_run(args, settings, clips, folder)
    else:
        runs, notes = MODES[args.mode](args, settings, clips)
    notes = skip_notes(skipped) + failure_notes(runs) + notes
    rows = summaries(runs)
    skipped_rows = [asdict(row) for row in skipped]
    write_outputs(folder, runs, rows, {"mode": args.mode, "clips": len(clips), "skipped": skipped_rows, "notes": notes})
    print(markdown(rows))
    for note in notes:
        print(note)
    print(f"\nwritten to {folder}")

"""Summaries of outcomes, and the files a run writes: Markdown, CSV, JSON and PNG plots."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from benchmark.runners import Outcome
from benchmark.scoring import normalise, normaliser_name, scores, spaced


@dataclass(frozen=True)
class Summary:
    """Figures for one path, model and language (or `all`)."""

    path: str
    model: str
    language: str
    clips: int
    failed: int
    audio_s: float
    wer: float | None  # None where words are not spaced (Chinese, Japanese): CER is the score there
    cer: float
    rtf: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    throughput: float | None = None
    peak_memory_mb: float | None = None
    normaliser: str = ""


@dataclass
class Run:
    """Outcomes of one path and model, with the wall time and worker memory of the whole batch."""

    path: str
    model: str
    outcomes: list[Outcome]
    wall_s: float
    concurrency: int
    peak_memory_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summarise(run: Run, language: str, outcomes: Sequence[Outcome]) -> Summary:
    """Figures for a group of outcomes from one run."""
    good = [o for o in outcomes if o.error is None]
    labels = [scoring_language(o) for o in good]
    refs = [normalise(o.clip.reference, label) for o, label in zip(good, labels, strict=True)]
    hyps = [normalise(o.hypothesis, label) for o, label in zip(good, labels, strict=True)]
    wer, cer = scores(refs, hyps, labels)
    audio = sum(o.audio_s for o in good)
    latencies = [o.latency_s for o in good]
    whole = language == "all"
    return Summary(
        path=run.path,
        model=run.model,
        language=language,
        clips=len(outcomes),
        failed=len(outcomes) - len(good),
        audio_s=round(audio, 1),
        wer=round(wer, 4) if any(spaced(label) for label in labels) else None,
        cer=round(cer, 4),
        rtf=round(sum(o.processing_s for o in good) / audio, 4) if audio else float("nan"),
        latency_p50_s=round(percentile(latencies, 0.5), 3),
        latency_p95_s=round(percentile(latencies, 0.95), 3),
        latency_p99_s=round(percentile(latencies, 0.99), 3),
        throughput=round(audio / run.wall_s, 2) if whole and run.wall_s else None,
        peak_memory_mb=round(run.peak_memory_mb, 1) if whole and run.peak_memory_mb else None,
        normaliser=", ".join(sorted({normaliser_name(label) for label in labels})),
    )


def scoring_language(outcome: Outcome) -> str | None:
    """The language a clip is scored in: its label, else the one detected."""
    return outcome.clip.language or outcome.language


def summaries(runs: Iterable[Run]) -> list[Summary]:
    """Per language, then overall, for every run."""
    rows = []
    for run in runs:
        languages = sorted({o.clip.language or o.language or "?" for o in run.outcomes})
        for language in languages:
            group = [o for o in run.outcomes if (o.clip.language or o.language or "?") == language]
            rows.append(summarise(run, language, group))
        rows.append(summarise(run, "all", run.outcomes))
    return rows


def markdown(rows: Sequence[Summary]) -> str:
    """The summary as a Markdown table."""
    header = (
        "| path | model | language | clips | audio min | WER % | CER % | RTF | p50 s | p95 s | p99 s "
        "| throughput (audio s/s) | peak MiB | normaliser |"
    )
    lines = [header, "|" + "---|" * 14]
    for r in rows:
        throughput = "" if r.throughput is None else f"{r.throughput:.2f}"
        memory = "" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}"
        failed = f" ({r.failed} failed)" if r.failed else ""
        lines.append(
            f"| {r.path} | {r.model} | {r.language} | {r.clips}{failed} | {r.audio_s / 60:.1f} "
            f"| {percent(r.wer)} | {percent(r.cer)} | {r.rtf:.3f} | {r.latency_p50_s:.2f} "
            f"| {r.latency_p95_s:.2f} | {r.latency_p99_s:.2f} | {throughput} | {memory} | {r.normaliser} |"
        )
    return "\n".join(lines) + "\n" + LEGEND


LEGEND = (
    "\nWER over the languages written with spaces; `–` where there are none (Chinese, Japanese: read CER, counted "
    "without spaces). Normalisers: whisper-english (Whisper's English normaliser, numbers as numerals), "
    "whisper-basic (its basic one), +num2words (numerals spelled out in the language's words on both sides).\n"
)


def percent(rate: float | None) -> str:
    """A rate as a percentage with one decimal, `–` when there is none."""
    return "–" if rate is None else f"{100 * rate:.1f}"


def failure_notes(runs: Iterable[Run], listed: int = 20) -> list[str]:
    """One line per path and model with clips that failed, naming them and why."""
    notes = []
    for run in runs:
        failed = [o for o in run.outcomes if o.error is not None]
        if failed:
            named = "; ".join(f"{o.clip.id} ({o.error})" for o in failed[:listed])
            more = f"; and {len(failed) - listed} more (clips.csv)" if len(failed) > listed else ""
            notes.append(f"failed along {run.path} with {run.model}: {len(failed)} clips: {named}{more}")
    return notes


def write_outputs(out: Path, runs: Sequence[Run], rows: Sequence[Summary], extra: dict[str, Any]) -> None:
    """summary.md, summary.csv, clips.csv, results.json and the plots, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(markdown(rows) + "".join(f"\n{line}\n" for line in extra.get("notes", [])))
    with (out / "summary.csv").open("w", newline="") as handle:
        table = csv.DictWriter(handle, fieldnames=[f.name for f in fields(Summary)])
        table.writeheader()
        table.writerows(asdict(row) for row in rows)
    with (out / "clips.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "path",
                "model",
                "clip",
                "language",
                "audio_s",
                "latency_s",
                "queued_s",
                "processing_s",
                "error",
                "reference",
                "hypothesis",
            ]
        )
        for run in runs:
            writer.writerows(_clip_row(o) for o in run.outcomes)
    document = {
        "summaries": [asdict(row) for row in rows],
        **extra,
        "runs": [
            {
                "path": r.path,
                "model": r.model,
                "wall_s": r.wall_s,
                "concurrency": r.concurrency,
                "peak_memory_mb": r.peak_memory_mb,
                **r.extra,
            }
            for r in runs
        ],
    }
    (out / "results.json").write_text(json.dumps(document, indent=2, default=str))
    plot(out, runs, rows)


def _clip_row(o: Outcome) -> list[Any]:
    return [
        o.path,
        o.model,
        o.clip.id,
        o.clip.language or o.language,
        round(o.audio_s, 3),
        round(o.latency_s, 3),
        round(o.queued_s, 3),
        round(o.processing_s, 3),
        o.error or "",
        o.clip.reference,
        o.hypothesis,
    ]


def plot(out: Path, runs: Sequence[Run], rows: Sequence[Summary]) -> None:
    """WER by model and language, real-time factor by model, and the latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_language = [r for r in rows if r.language != "all"]
    labels = sorted({f"{r.path}/{r.model}" for r in per_language})
    languages = sorted({r.language for r in per_language})
    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(languages) * max(1, len(labels))), 4))
    width = 0.8 / max(1, len(labels))
    for index, label in enumerate(labels):
        values = [
            next((100 * _score(r) for r in per_language if f"{r.path}/{r.model}" == label and r.language == lang), 0.0)
            for lang in languages
        ]
        axes.bar([x + index * width for x in range(len(languages))], values, width, label=label)
    axes.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(languages))], languages)
    axes.set_ylabel("WER % (CER % where words are not spaced)")
    axes.set_title("Error rate by model and language")
    axes.legend()
    figure.savefig(out / "wer_by_model_language.png", dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 4))
    overall = {f"{run.path}/{run.model}": _rtf(run) for run in runs}
    axes.bar(list(overall), list(overall.values()))
    axes.set_ylabel("processing s per audio s")
    axes.set_title("Real-time factor by model (lower is faster)")
    figure.savefig(out / "rtf_by_model.png", dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.boxplot(
        [[o.latency_s for o in run.outcomes if o.error is None] or [0.0] for run in runs],
        tick_labels=[f"{run.path}/{run.model}" for run in runs],
    )
    axes.set_ylabel("seconds per clip")
    axes.set_title("Latency distribution")
    figure.savefig(out / "latency.png", dpi=100, bbox_inches="tight")
    plt.close(figure)


def _score(row: Summary) -> float:
    return row.cer if row.wer is None else row.wer


def _rtf(run: Run) -> float:
    good = [o for o in run.outcomes if o.error is None]
    audio = sum(o.audio_s for o in good)
    return sum(o.processing_s for o in good) / audio if audio else 0.0


def median_ratio(ratios: Sequence[float]) -> float:
    """The median of several runs' ratios."""
    return statistics.median(ratios) if ratios else float("nan")

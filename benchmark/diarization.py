"""Speaker labels, as figures: diarization error rate, speaker count, word-level speaker accuracy, cost and WER.

python -m benchmark.diarization [--only real,built,service,long] [--built benchmark-results/conversations]
                                [--out benchmark-results/diarization] [--engine whisperq] [--count auto]
                                [--files conv2_01,...] [--model tiny.en] [--runs 1] [--device cpu]

The engine path runs worker.diarization's Diarizer on decoded audio (no service):
- real: the conversations in ../shared/data/diarization (AMI meeting excerpts pooled, pyannote's sample, Falcon's
  three-speaker test) against their RTTM turns.
- built: the conversations benchmark.conversations builds (built into --built first if it has none), by speaker count.
Each gives the diarization error rate (pyannote.metrics) with a 0.25 s collar either side of every reference
boundary and overlapping speech scored, and with no collar; its parts (missed speech, false alarm, confusion); and
how often the number of speakers found is exactly right when it is not given (--count given passes it instead).
--engine oracle (the reference turns, DER 0) and one-label (one speaker throughout) check the scoring itself;
--engine one-at-a-time (the reference turns with overlaps given to one speaker) is the best any labeller that gives
each moment one speaker can score: what overlapping speech alone costs.

The service path starts a local stack (embedded Redis, the API, one worker) and submits files with word timestamps,
without and with diarize=true:
- service: the English two-speaker built conversations: words labelled with their true speaker (after the optimal
  mapping of labels to speakers), WER without and with speaker labels, the worker's processing time added. The
  worker loads its voice encoder on its first labelled task, once: a labelled JFK clip goes first, and its
  speaker stage's time (the load) is reported on its own rather than added to one file's figure.
- long: the 16-minute file: peak worker memory, time and WER, without and with speaker labels (a fresh stack each).
Tables are printed and written to --out as diarization.md, with every figure in diarization.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jiwer
import numpy as np
from pyannote.core import Annotation, Segment, Timeline  # type: ignore[import-untyped]
from pyannote.metrics.diarization import DiarizationErrorRate

from benchmark import conversations
from benchmark.conversations import SAMPLE_RATE, Turn, decode, read_index, read_rttm, read_stm
from benchmark.longfiles import CLIP, DATA, LONG, Client
from benchmark.scoring import error_rates, normalise
from benchmark.service import local_service
from shared.settings import Settings

OUT = Path("benchmark-results") / "diarization"
# pyannote.metrics takes `collar` as the whole width of the zone around each reference boundary, centred on it
# (UEMSupportMixin.extrude in pyannote/metrics/utils.py removes Segment(t - collar / 2, t + collar / 2)), so
# NIST md-eval's `-c 0.25` (0.25 s either side) is collar=0.5 here.
COLLAR = 0.5
COLLARS = {"0.25 s": COLLAR, "none": 0.0}
AMI = "AMI excerpts"
# Goals from issue 18: DER with the 0.25 s collar, by group; speaker count exactly right; words; cost.
DER_GOALS = {
    AMI: 0.20,
    "pyannote_sample": 0.10,
    "falcon_test": 0.10,
    "built, 2 speakers": 0.10,
    "built, 4 speakers": 0.15,
}
COUNT_GOAL = 0.90
WORDS_GOAL = 0.95
TIME_ADDED_GOAL = 0.20
SECTIONS = ("real", "built", "service", "long")


class Labelled(Protocol):
    """A speaker turn as the engine and the reference give it."""

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...

    @property
    def speaker(self) -> str: ...


@dataclass(frozen=True)
class Item:
    """A recording with its reference turns, the group it is scored in, and its words where known."""

    name: str
    audio: Path
    turns: list[Turn]
    group: str
    words: Path | None = None

    @property
    def speakers(self) -> int:
        """How many people speak in it."""
        return len({turn.speaker for turn in self.turns})


@dataclass
class FileScore:
    """One file through the engine."""

    name: str
    group: str
    seconds: float
    speakers: int
    found: int
    der: dict[str, float]
    parts: dict[str, float]
    engine_s: float


Engine = Callable[[np.ndarray, Item, int | None], Sequence[Labelled]]


# --- scoring ---


def annotation(turns: Iterable[Labelled]) -> Annotation:
    """The turns as a pyannote Annotation; empty turns are left out."""
    labelled = Annotation()
    for index, turn in enumerate(turns):
        if turn.end > turn.start:
            labelled[Segment(turn.start, turn.end), index] = turn.speaker
    return labelled


def extent(seconds: float) -> Timeline:
    """The whole file as the scored region, so that pyannote need not guess it from the turns."""
    return Timeline([Segment(0.0, seconds)])


def metrics() -> dict[str, DiarizationErrorRate]:
    """One accumulating DER metric per collar, overlapping speech scored."""
    return {name: DiarizationErrorRate(collar=collar, skip_overlap=False) for name, collar in COLLARS.items()}


def der(reference: Sequence[Labelled], hypothesis: Sequence[Labelled], seconds: float, collar: float = COLLAR) -> float:
    """The diarization error rate of one file."""
    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    return float(metric(annotation(reference), annotation(hypothesis), uem=extent(seconds)))


def shares(metric: DiarizationErrorRate) -> dict[str, float]:
    """Missed speech, false alarm and confusion accumulated by a metric, each over the reference speech."""
    accumulated = metric.accumulated_
    total = float(accumulated["total"]) or float("nan")
    return {part: float(accumulated[part]) / total for part in ("missed detection", "false alarm", "confusion")}


def mapping(reference: Sequence[Labelled], hypothesis: Sequence[Labelled]) -> dict[str, str]:
    """Hypothesis label to reference speaker, as pyannote's optimal (Hungarian) mapping pairs them."""
    found = DiarizationErrorRate().optimal_mapping(annotation(reference), annotation(hypothesis))
    return {str(label): str(speaker) for label, speaker in found.items()}


# --- words: which words were given their true speaker ---


@dataclass(frozen=True)
class Word:
    """A word said (or heard) by someone, with its time."""

    start: float
    end: float
    speaker: str
    text: str


def reference_words(turns: Sequence[Turn]) -> list[tuple[str, str]]:
    """(normalised word, speaker) for every word of the reference turns."""
    return [(token, turn.speaker) for turn in turns for token in normalise(turn.text, "en").split()]


def heard_words(words: Sequence[Word]) -> list[tuple[str, str]]:
    """(normalised word, speaker) for every word of the hypothesis; a word may normalise to none or several."""
    return [(token, word.speaker) for word in words for token in normalise(word.text, "en").split()]


def word_accuracy(turns: Sequence[Turn], words: Sequence[Word]) -> tuple[float, int]:
    """Share of aligned words (right or misrecognised) whose mapped speaker is the true one, and how many aligned.

    One minus the word diarization error rate of Shafey et al. (2019): words are aligned to the reference text as for
    WER; inserted and deleted words have no true speaker and are left out.
    """
    ref, hyp = reference_words(turns), heard_words(words)
    if not ref or not hyp:
        return float("nan"), 0
    to_reference = mapping(turns, words)
    output = jiwer.process_words(" ".join(t for t, _ in ref), " ".join(t for t, _ in hyp))
    pairs = [
        (ref[chunk.ref_start_idx + offset][1], hyp[chunk.hyp_start_idx + offset][1])
        for chunk in output.alignments[0]
        if chunk.type in ("equal", "substitute")
        for offset in range(chunk.ref_end_idx - chunk.ref_start_idx)
    ]
    right = sum(to_reference.get(heard) == said for said, heard in pairs)
    return (right / len(pairs) if pairs else float("nan")), len(pairs)


# --- the data ---


def real_items() -> list[Item]:
    """The recorded conversations of ../shared/data/diarization, AMI's excerpts in one group."""
    folder = DATA / "diarization"
    items = []
    for rttm in sorted(folder.glob("*.rttm")):
        for name, turns in read_rttm(rttm).items():
            items.append(Item(name, folder / f"{name}.flac", turns, AMI if name.startswith("ami_") else name))
    return items


def built_items(folder: Path, names: Sequence[str] = ()) -> list[Item]:
    """The built conversations in `folder` (those named, or all), built there first if it has none."""
    if not (folder / "conversations.tsv").exists():
        conversations.build_all(folder)
    items = []
    for row in read_index(folder):
        name = row["name"]
        if names and name not in names:
            continue
        words = folder / f"{name}.stm" if row["stm"] == "1" else None
        turns = read_rttm(folder / f"{name}.rttm")[name]
        items.append(Item(name, folder / f"{name}.wav", turns, f"built, {row['speakers']} speakers", words))
    return items


# --- the engine path ---


def whisperq_engine(device: str, count: str) -> Engine:
    """worker.diarization's Diarizer, loaded once; told the number of speakers only with count == "given"."""
    from worker.diarization import Diarizer

    diarizer = Diarizer(device=device)

    def label(audio: np.ndarray, item: Item, speakers: int | None) -> Sequence[Labelled]:
        return diarizer.turns(audio, num_speakers=speakers if count == "given" else None)

    return label


def oracle(audio: np.ndarray, item: Item, speakers: int | None) -> Sequence[Labelled]:
    """The reference turns themselves: DER 0."""
    return item.turns


def one_label(audio: np.ndarray, item: Item, speakers: int | None) -> Sequence[Labelled]:
    """One speaker from start to end."""
    return [Turn(0.0, len(audio) / SAMPLE_RATE, "SPEAKER_00")]


def one_at_a_time(audio: np.ndarray, item: Item, speakers: int | None) -> Sequence[Labelled]:
    """The reference turns with one speaker at a time: where turns overlap, whoever spoke first keeps the time."""
    turns: list[Labelled] = []
    until = 0.0
    for turn in sorted(item.turns, key=lambda turn: turn.start):
        start = max(turn.start, until)
        if turn.end > start:
            turns.append(Turn(start, turn.end, turn.speaker))
        until = max(until, turn.end)
    return turns


def engine_named(name: str, device: str, count: str) -> Engine:
    """The engine --engine names."""
    if name == "oracle":
        return oracle
    if name == "one-at-a-time":
        return one_at_a_time
    if name == "one-label":
        return one_label
    return whisperq_engine(device, count)


def score_items(engine: Engine, items: Sequence[Item]) -> tuple[list[FileScore], dict[str, dict[str, Any]]]:
    """Every item through the engine: a score per file, and per group (pooled DER, parts, count right)."""
    pooled: dict[str, dict[str, DiarizationErrorRate]] = {}
    scores = []
    for item in items:
        audio = decode(item.audio)
        started = time.perf_counter()
        turns = engine(audio, item, item.speakers)
        spent = time.perf_counter() - started
        group = pooled.setdefault(item.group, metrics())
        seconds = len(audio) / SAMPLE_RATE
        reference, hypothesis, region = annotation(item.turns), annotation(turns), extent(seconds)
        rates = {name: float(metric(reference, hypothesis, uem=region)) for name, metric in group.items()}
        parts = metrics()["0.25 s"](reference, hypothesis, uem=region, detailed=True)
        found = len({turn.speaker for turn in turns})
        scores.append(FileScore(item.name, item.group, seconds, item.speakers, found, rates, parts, spent))
        print(f"  {item.name}: DER {100 * rates['0.25 s']:.1f} %, {found} of {item.speakers} speakers, {spent:.1f} s")
    return scores, {name: group_figures(group, scores, name) for name, group in pooled.items()}


def group_figures(group: dict[str, DiarizationErrorRate], scores: Sequence[FileScore], name: str) -> dict[str, Any]:
    """Pooled DER by collar, its parts, the share of files with the right count, audio and engine time."""
    mine = [score for score in scores if score.group == name]
    audio_s = sum(score.seconds for score in mine)
    return {
        "files": len(mine),
        "audio_s": audio_s,
        "der": {collar: float(abs(metric)) for collar, metric in group.items()},
        "parts": shares(group["0.25 s"]),
        "count_right": sum(score.found == score.speakers for score in mine) / len(mine),
        "engine_xrt": audio_s / max(sum(score.engine_s for score in mine), 1e-9),
        "goal": DER_GOALS.get(name),
    }


def engine_table(groups: dict[str, dict[str, Any]], count: str) -> list[str]:
    """The engine path's figures by group, as Markdown."""
    count_head = "count right %" if count == "auto" else "count right % (given)"
    lines = [
        f"| set | files | audio min | DER % (0.25 s collar) | goal | missed % | false alarm % | confusion % "
        f"| DER % (no collar) | {count_head} | engine x real time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in groups.items():
        goal = f"≤ {100 * g['goal']:.0f} {'met' if g['der']['0.25 s'] <= g['goal'] else 'not met'}" if g["goal"] else ""
        parts = g["parts"]
        lines.append(
            f"| {name} | {g['files']} | {g['audio_s'] / 60:.1f} | {100 * g['der']['0.25 s']:.1f} | {goal} "
            f"| {100 * parts['missed detection']:.1f} | {100 * parts['false alarm']:.1f} "
            f"| {100 * parts['confusion']:.1f} | {100 * g['der']['none']:.1f} | {100 * g['count_right']:.0f} "
            f"| {g['engine_xrt']:.0f} |"
        )
    return lines


def file_table(scores: Sequence[FileScore]) -> list[str]:
    """Each file's DER and speaker count, as Markdown."""
    lines = ["| file | set | s | speakers | found | DER % (0.25 s) | DER % (none) |", "|---|---|---|---|---|---|---|"]
    for s in scores:
        lines.append(
            f"| {s.name} | {s.group} | {s.seconds:.0f} | {s.speakers} | {s.found} | {100 * s.der['0.25 s']:.1f} "
            f"| {100 * s.der['none']:.1f} |"
        )
    return lines


def count_line(scores: Sequence[FileScore]) -> str:
    """The share of all files given exactly their number of speakers, against the goal."""
    right = sum(score.found == score.speakers for score in scores) / len(scores)
    verdict = "met" if right >= COUNT_GOAL else "not met"
    return f"Speaker count exactly right in {100 * right:.0f} % of {len(scores)} files (goal ≥ 90 %: {verdict})."


# --- the service path ---


def result_words(result: dict[str, Any]) -> list[Word]:
    """The result's words with their speakers (a word without one takes its segment's); a segment without words
    counts as one word per word of its text."""
    words = []
    for segment in result.get("segments", []):
        for word in segment.get("words") or [segment | {"word": segment["text"]}]:
            speaker = str(word.get("speaker") or segment.get("speaker"))
            words.append(Word(float(word["start"]), float(word["end"]), speaker, str(word["word"])))
    return words


def processing_s(task: dict[str, Any]) -> float:
    """The worker's time on a task, as the service records it."""
    return float(task.get("processing_seconds") or 0.0)


MODES = {"plain": {}, "labelled": {"diarize": "true"}}


@dataclass
class ServiceScore:
    """One file through the service, without ("plain") and with ("labelled") speaker labels."""

    name: str
    seconds: float
    speakers: int
    times: dict[str, list[float]] = field(default_factory=lambda: {mode: [] for mode in MODES})
    stage: list[float] = field(default_factory=list)  # the speaker stage's own seconds, labelled runs
    wer: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    found: int = 0
    word_accuracy: float = float("nan")
    words: int = 0

    def median(self, mode: str) -> float:
        """The median processing seconds of a mode."""
        return statistics.median(self.times[mode])

    @property
    def added(self) -> float:
        """Processing time added by speaker labels, over transcription alone (medians)."""
        return self.median("labelled") / self.median("plain") - 1

    @property
    def stage_share(self) -> float:
        """The speaker stage's own time over transcription alone (medians): what labels add where no core is
        spare for the turns to be worked out beside the decode."""
        return statistics.median(self.stage) / self.median("plain")

    def record(self, mode: str, task: dict[str, Any], reference: str) -> None:
        """A finished task of a mode: its processing time, WER and, labelled, the speakers found."""
        self.times[mode].append(processing_s(task))
        self.wer[mode] = wer(reference, task["result"]["text"])
        self.seconds = float(task.get("duration") or self.seconds)
        if mode == "labelled":
            self.stage.append(float(task.get("diarization_seconds") or 0.0))
            result = task["result"]
            self.found = len(result.get("speakers") or {word.speaker for word in result_words(result)})


def wer(reference: str, hypothesis: str) -> float:
    """WER after Whisper's English normalisation."""
    return error_rates([normalise(reference, "en")], [normalise(hypothesis, "en")])[0]


def service_built(settings: Settings, model: str, items: Sequence[Item], runs: int) -> list[ServiceScore]:
    """The English two-speaker conversations through one stack, the modes alternating: WER, words, time added."""
    scores = []
    with local_service(settings, model, 1) as service:
        client = Client(service.url, model)
        warm_up(client)
        for item in items:
            assert item.words is not None
            turns = read_stm(item.words)
            reference = " ".join(turn.text for turn in turns)
            score = ServiceScore(item.name, turns[-1].end, item.speakers)
            for _ in range(runs):
                for mode, fields in MODES.items():
                    task, _ = client.run(item.audio, word_timestamps="true", **fields)
                    score.record(mode, task, reference)
            score.word_accuracy, score.words = word_accuracy(turns, result_words(task["result"]))
            print(f"  {item.name}: words {100 * score.word_accuracy:.1f} %, time added {100 * score.added:.0f} %")
            scores.append(score)
    return scores


def warm_up(client: Client) -> None:
    """A labelled JFK clip, so that the worker's voice encoder is loaded before anything is timed."""
    task, _ = client.run(CLIP, diarize="true")
    seconds = task["diarization_seconds"]
    print(f"  warm-up: the worker's first speaker stage (JFK, loading the encoder) took {seconds} s")


def service_long(settings: Settings, model: str, runs: int) -> ServiceScore:
    """The 16-minute file, a fresh stack for each mode so that each peak is its own."""
    reference = LONG.with_suffix(".txt").read_text()
    score = ServiceScore(LONG.name, 0.0, 1)
    for mode, fields in MODES.items():
        with local_service(settings, model, 1) as service:
            client = Client(service.url, model)
            if mode == "labelled":
                warm_up(client)
            for _ in range(runs):
                task, _ = client.run(LONG, word_timestamps="true", **fields)
                score.record(mode, task, reference)
            score.peak_mb[mode] = service.worker_peak_memory_mb()
    print(f"  {LONG.name}: peak {score.peak_mb}, time added {100 * score.added:.0f} %")
    return score


def service_table(scores: Sequence[ServiceScore], model: str) -> list[str]:
    """The service path's figures per file, as Markdown."""
    lines = [
        f"| file ({model}) | audio s | speakers / found | word speaker accuracy % | WER % plain | WER % labelled "
        "| processing s plain | processing s labelled | time added % | stage's own s (% of plain) "
        "| peak worker MiB plain / labelled |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        accuracy = f"{100 * s.word_accuracy:.1f} ({s.words} words)" if s.words else ""
        peak = " / ".join(f"{s.peak_mb[mode]:.0f}" for mode in ("plain", "labelled")) if s.peak_mb else ""
        lines.append(
            f"| {s.name} | {s.seconds:.0f} | {s.speakers} / {s.found} | {accuracy} | {100 * s.wer['plain']:.2f} "
            f"| {100 * s.wer['labelled']:.2f} | {s.median('plain'):.1f} "
            f"| {s.median('labelled'):.1f} | {100 * s.added:.0f} "
            f"| {statistics.median(s.stage):.1f} ({100 * s.stage_share:.0f}) | {peak} |"
        )
    return lines


def service_summary(built: Sequence[ServiceScore]) -> list[str]:
    """Pooled word accuracy and time added over the built files, against the goals."""
    if not built:
        return []
    words = sum(s.words for s in built)
    accuracy = sum(s.word_accuracy * s.words for s in built if s.words) / max(words, 1)
    added = sum(s.median("labelled") for s in built) / sum(s.median("plain") for s in built) - 1
    own = sum(statistics.median(s.stage) for s in built) / sum(s.median("plain") for s in built)
    changed = sum(s.wer["plain"] != s.wer["labelled"] for s in built)
    return [
        f"Word speaker accuracy over {len(built)} two-speaker files: {100 * accuracy:.1f} % of {words} words "
        f"(goal ≥ 95 %: {'met' if accuracy >= WORDS_GOAL else 'not met'}).",
        f"Time added by speaker labels: {100 * added:.0f} % (goal ≤ 20 % on CPU: "
        f"{'met' if added <= TIME_ADDED_GOAL else 'not met'}); the stage's own time, what it adds where no core "
        f"is spare: {100 * own:.0f} %.",
        f"WER changed by speaker labels in {changed} of {len(built)} files.",
    ]


# --- the run ---


class Report:
    """Lines printed as they come and kept for diarization.md; figures kept for diarization.json."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.figures: dict[str, Any] = {}

    def say(self, *lines: str) -> None:
        """Print and keep."""
        for line in lines:
            print(line)
            self.lines.append(line)

    def write(self, out: Path) -> None:
        """diarization.md and diarization.json in `out`."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "diarization.md").write_text("\n".join(self.lines) + "\n")
        (out / "diarization.json").write_text(json.dumps(self.figures, indent=2, default=str))


def engine_section(report: Report, title: str, engine: Engine, items: Sequence[Item], count: str) -> None:
    """Score the items on the engine path and report them."""
    print(f"{title}: {len(items)} files")
    scores, groups = score_items(engine, items)
    report.say(f"\n## {title}\n", *engine_table(groups, count), "")
    if count == "auto":
        report.say(count_line(scores), "")
    report.say(*file_table(scores))
    report.figures[title] = {"groups": groups, "files": [asdict(score) for score in scores]}


def service_section(
    report: Report, settings: Settings, model: str, items: Sequence[Item], runs: int, long: bool
) -> None:
    """Score the English two-speaker built files (and with `long` the 16-minute file) on the service path."""
    items = [item for item in items if item.words is not None and item.speakers == 2]
    print(f"Service: {len(items)} English two-speaker files{f' and {LONG.name}' if long else ''}")
    built = service_built(settings, model, items, runs) if items else []
    scores = [*built, service_long(settings, model, runs)] if long else built
    title = f"Through the service ({model}, one worker, word timestamps on, median of {runs})"
    report.say(f"\n## {title}\n", *service_table(scores, model), "", *service_summary(built))
    report.figures["service"] = [asdict(score) | {"added": score.added} for score in scores]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: real, built, service, long")
    parser.add_argument("--built", type=Path, default=conversations.OUT, help="the built conversations' folder")
    parser.add_argument("--files", default="", help="comma-separated built conversations to use (all by default)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--engine", choices=("whisperq", "oracle", "one-label", "one-at-a-time"), default="whisperq")
    parser.add_argument("--count", choices=("auto", "given"), default="auto", help="the number of speakers")
    parser.add_argument("--device", default="cpu", help="the engine path's device")
    parser.add_argument("--model", default="tiny.en", help="the service path's model")
    parser.add_argument("--runs", type=int, default=1, help="service runs per file and mode (times are medians)")
    args = parser.parse_args(argv)
    chosen = set(args.only.split(","))
    names = [name for name in args.files.split(",") if name]
    report = Report()
    report.say(f"# Speaker labels (engine: {args.engine}, speaker count {args.count})")
    if chosen & {"real", "built"}:
        engine = engine_named(args.engine, args.device, args.count)
        if "real" in chosen:
            engine_section(report, "Recorded conversations", engine, real_items(), args.count)
        if "built" in chosen:
            engine_section(report, "Built conversations", engine, built_items(args.built, names), args.count)
    if chosen & {"service", "long"}:
        items = built_items(args.built, names) if "service" in chosen else []
        service_section(report, Settings(), args.model, items, args.runs, "long" in chosen)
    report.write(args.out)
    print(f"\nwritten to {args.out / 'diarization.md'} and diarization.json")


if __name__ == "__main__":
    main()

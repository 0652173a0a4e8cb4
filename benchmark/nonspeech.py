"""Invented text on non-speech, and speech kept: the worker's transcripts without and with `drop_nonspeech`.

python -m benchmark.nonspeech [--models tiny.en,base] [--speech-per-language 40] [--out benchmark-results/nonspeech]

Each clip is decoded once by the worker's engine (`worker.engine.transcribe`, default options) with drop_nonspeech
off: what the service wrote before it existed. The worker's own test (`worker.nonspeech.keeper`) is then applied to
those segments: what it writes now by default. The test runs after decoding and never changes it, so one decode
gives both, and the difference is the test's alone.
- non-speech: the manifest's `nonspeech` rows (tones, beeps, silences of 0.2 to 10 s, screaming monkeys) and the
  no-speech video: words written per minute of audio (the words the scoring normaliser keeps), files with any text.
- speech: the 300 spoken digits (single words at 8 kHz, the easiest speech to drop) and up to N clips of every other
  language (English only for .en models): WER before and after, and the clips that lost words.
English-only models decode every non-speech clip, as English; multilingual ones in the row's language.
Tables are printed and written to --out as nonspeech.md, each clip's texts to outcomes.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from benchmark.dataset import Clip, Filters, read_manifest, spoken_language
from benchmark.longfiles import DATA
from benchmark.scoring import normalise, normaliser_name, scores
from shared.enums import TaskType
from shared.schemas import Segment, TranscribeOptions
from shared.settings import Settings
from worker import nonspeech, splitting
from worker.engine import Engine, load_engine, transcribe

OUT = Path("benchmark-results") / "nonspeech"
VIDEO = DATA / "video" / "big_buck_bunny_small_nospeech.mp4"
DIGITS = "fsdd_"


@dataclass(frozen=True)
class Outcome:
    """One clip's text without and with the non-speech test."""

    id: str
    kind: str  # nonspeech, digit or speech
    language: str | None
    duration: float
    reference: str
    before: str
    after: str


def non_speech(clips: Sequence[Clip]) -> list[Clip]:
    """The manifest's non-speech rows and the no-speech video."""
    video = Clip(id="big_buck_bunny_nospeech", audio=VIDEO, reference="", language=None, ref_quality="nonspeech")
    return [clip for clip in clips if clip.ref_quality.startswith("nonspeech")] + [video]


def speech(clips: Sequence[Clip], model: str, per_language: int) -> list[Clip]:
    """Every spoken digit, and up to `per_language` other clips of each language the model speaks."""
    spoken = [clip for clip in clips if not clip.ref_quality.startswith("nonspeech") and clip.reference.strip()]
    if model.endswith(".en"):
        spoken = [clip for clip in spoken if clip.language == "en"]
    digits = [clip for clip in spoken if clip.id.startswith(DIGITS)]
    others = Filters(max_per_language=per_language).apply(c for c in spoken if not c.id.startswith(DIGITS))
    return digits + others


def run_clip(engine: Engine, clip: Clip, kind: str) -> Outcome:
    """The clip decoded once; its text as decoded, and as the non-speech test leaves it."""
    language = "en" if not engine.multilingual else spoken_language(clip)
    options = TranscribeOptions(language=language, drop_nonspeech=False)
    transcript = transcribe(engine, clip.audio, TaskType.TRANSCRIBE, options, lambda *_: None)
    keep = nonspeech.keeper(
        splitting.decode(clip.audio, engine.max_audio_s), options.model_copy(update={"drop_nonspeech": True})
    )
    return Outcome(
        id=clip.id,
        kind=kind,
        language=transcript.language if kind == "nonspeech" else clip.language,
        duration=transcript.duration,
        reference=clip.reference,
        before=_text(transcript.segments),
        after=_text([segment for segment in transcript.segments if keep(segment)]),
    )


def _text(segments: Sequence[Segment]) -> str:
    return "".join(segment.text for segment in segments).strip()


def words(text: str, language: str | None) -> int:
    """Words in a text, as the scoring normaliser counts them (punctuation alone is none)."""
    return len(normalise(text, language).split())


def summary(model: str, outcomes: Sequence[Outcome]) -> dict[str, object]:
    """The model's figures: invented words per minute of non-speech, WER on speech, before and after."""
    silent = [o for o in outcomes if o.kind == "nonspeech"]
    minutes = sum(o.duration for o in silent) / 60
    figures: dict[str, object] = {"model": model, "nonspeech_files": len(silent), "nonspeech_minutes": minutes}
    for side in ("before", "after"):
        invented = sum(words(getattr(o, side), o.language) for o in silent)
        figures[f"invented_{side}"] = invented
        figures[f"invented_per_min_{side}"] = invented / minutes if minutes else float("nan")
        figures[f"files_with_text_{side}"] = sum(1 for o in silent if words(getattr(o, side), o.language))
        for name, kinds in (("digits", {"digit"}), ("other", {"speech"}), ("speech", {"digit", "speech"})):
            figures[f"wer_{name}_{side}"] = _wer([o for o in outcomes if o.kind in kinds], side)
    spoken = [o for o in outcomes if o.kind != "nonspeech"]
    figures["speech_clips"] = len(spoken)
    figures["lost"] = [o.id for o in spoken if words(o.after, o.language) < words(o.before, o.language)]
    return figures


def _wer(outcomes: Sequence[Outcome], side: str) -> float:
    references = [normalise(o.reference, o.language) for o in outcomes]
    hypotheses = [normalise(getattr(o, side), o.language) for o in outcomes]
    return scores(references, hypotheses, [o.language for o in outcomes])[0]


def table(figures: Sequence[dict[str, object]]) -> str:
    """The summaries as a markdown table."""
    lines = [
        "| model | non-speech files (min) | invented words / min, before → after | files with text | "
        "speech clips | digit WER % | other speech WER % | all speech WER % | clips that lost words |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lost = f["lost"]
        assert isinstance(lost, list)
        lines.append(
            f"| {f['model']} | {f['nonspeech_files']} ({_num(f['nonspeech_minutes'], 1)}) "
            f"| {_num(f['invented_per_min_before'], 1)} → **{_num(f['invented_per_min_after'], 1)}** "
            f"| {f['files_with_text_before']} → {f['files_with_text_after']} | {f['speech_clips']} "
            f"| {_pair(f, 'digits')} | {_pair(f, 'other')} | {_pair(f, 'speech')} "
            f"| {len(lost)}{': ' + ', '.join(map(str, lost)) if lost else ''} |"
        )
    named = sorted({normaliser_name(language) for language in ("en", "es")})
    lines.append(f"\nWords counted and WER scored after normalising ({', '.join(named)}).")
    return "\n".join(lines)


def _pair(figures: dict[str, object], name: str) -> str:
    return f"{_num(figures[f'wer_{name}_before'], 2, 100)} → {_num(figures[f'wer_{name}_after'], 2, 100)}"


def _num(value: object, digits: int, scale: float = 1.0) -> str:
    assert isinstance(value, int | float)
    return f"{value * scale:.{digits}f}"


def measure(model: str, settings: Settings, per_language: int, journal: Path) -> dict[str, object]:
    """Every clip through one model; each outcome into the journal as it comes."""
    engine = load_engine(settings.model_copy(update={"model": model}))
    clips, _ = read_manifest(DATA / "manifest.tsv")
    work = [(clip, "nonspeech") for clip in non_speech(clips)]
    work += [(clip, "digit" if clip.id.startswith(DIGITS) else "speech") for clip in speech(clips, model, per_language)]
    outcomes = []
    with journal.open("a") as out:
        for clip, kind in tqdm(work, desc=model, unit="clip"):
            outcomes.append(run_clip(engine, clip, kind))
            out.write(json.dumps({"model": model, **asdict(outcomes[-1])}, ensure_ascii=False) + "\n")
            out.flush()
    return summary(model, outcomes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmark.nonspeech", description=__doc__)
    parser.add_argument("--models", default="tiny.en,base", help="comma-separated (default: %(default)s)")
    parser.add_argument("--speech-per-language", type=int, default=40, help="speech clips per language besides digits")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    folder = args.out / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    journal = folder / "outcomes.jsonl"
    figures = [measure(model, settings, args.speech_per_language, journal) for model in args.models.split(",")]
    report = table(figures)
    (folder / "nonspeech.md").write_text(report + "\n")
    (folder / "nonspeech.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(report)
    print(f"\nwritten to {folder}")


if __name__ == "__main__":
    main()

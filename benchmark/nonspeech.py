"""Invented text on non-speech, and speech kept: the worker's transcripts as decoded and with `drop_nonspeech`.

python -m benchmark.nonspeech [--models tiny.en,base] [--speech-per-language 40] [--out benchmark-results/nonspeech]

Each clip is decoded once by the worker's engine (`worker.engine.transcribe`, default options) with drop_nonspeech
off: what the service wrote before it existed. The worker's own rule (`worker.nonspeech.keeper`) is then applied to
those segments: what it writes now by default. The rule runs after decoding and never changes it, so one decode
gives both, and the difference is the rule's alone. Beside it, for comparison, each kind of signal it combines alone:
"VAD alone" keeps a segment only where Silero VAD hears a voice (as gating the audio by the VAD would), "Whisper alone"
drops every segment Whisper is unsure of (a failed check, or a fallback temperature) or judges silent.
- non-speech: the manifest's `nonspeech` rows (tones, beeps, silences of 0.2 to 10 s, screaming monkeys) and the
  no-speech video: words written per minute of audio, files with any text.
- speech: the 300 spoken digits (single words at 8 kHz, the easiest speech to drop) and up to N clips of every other
  language (English only for .en models): WER, and the clips that lost words.
English-only models decode every non-speech clip, as English; multilingual ones in the row's language.
Tables are printed and written to --out as nonspeech.md (figures in nonspeech.json), each clip's texts to
outcomes.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
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


# Ways to choose the segments kept, compared in one run: none (as decoded), the worker's rule, and each kind of signal
# it combines alone.
RULES = ("as decoded", "drop_nonspeech", "VAD alone", "Whisper alone")


@dataclass(frozen=True)
class Outcome:
    """One clip's text as decoded and as each rule leaves it."""

    id: str
    kind: str  # nonspeech, digit or speech
    language: str | None
    duration: float
    reference: str
    texts: dict[str, str]


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
    """The clip decoded once; its text as decoded, and as each rule leaves it."""
    language = "en" if not engine.multilingual else spoken_language(clip)
    options = TranscribeOptions(language=language, drop_nonspeech=False)
    transcript = transcribe(engine, clip.audio, TaskType.TRANSCRIBE, options, lambda *_: None)
    samples = splitting.decode(clip.audio, engine.max_audio_s)
    rules = _rules(samples, options)
    return Outcome(
        id=clip.id,
        kind=kind,
        language=transcript.language if kind == "nonspeech" else clip.language,
        duration=transcript.duration,
        reference=clip.reference,
        texts={name: _text([s for s in transcript.segments if keep(s)]) for name, keep in rules.items()},
    )


def _rules(samples: np.ndarray, options: TranscribeOptions) -> dict[str, Callable[[Segment], bool]]:
    """Each rule's test of a segment (True: kept); drop_nonspeech is the worker's own."""
    listener = nonspeech.Listener(samples)

    def whisper_alone(segment: Segment) -> bool:
        fell_back = segment.temperature != options.temperature[0]
        unsure = fell_back or segment.avg_logprob < nonspeech.UNSURE_LOGPROB
        return not (unsure or segment.compression_ratio > nonspeech.REPEATING) and not (
            segment.no_speech_prob > nonspeech.SILENT_NO_SPEECH
        )

    return {
        "as decoded": lambda _segment: True,
        "drop_nonspeech": nonspeech.keeper(samples, options.model_copy(update={"drop_nonspeech": True})),
        "VAD alone": lambda segment: listener.voice(segment.start, segment.end) >= nonspeech.NO_VOICE,
        "Whisper alone": whisper_alone,
    }


def _text(segments: Sequence[Segment]) -> str:
    return "".join(segment.text for segment in segments).strip()


def words(text: str) -> int:
    """Words in a text, as Whisper's basic normaliser leaves them: punctuation alone is none, a filler such as "Mmm"
    is one (the English normaliser drops fillers)."""
    return len(normalise(text, None).split())


def summary(model: str, outcomes: Sequence[Outcome], rule: str) -> dict[str, object]:
    """One rule's figures for one model: invented words per minute of non-speech, WER on speech, clips that lost
    words against the text as decoded."""
    silent = [o for o in outcomes if o.kind == "nonspeech"]
    spoken = [o for o in outcomes if o.kind != "nonspeech"]
    minutes = sum(o.duration for o in silent) / 60
    invented = sum(words(o.texts[rule]) for o in silent)
    figures: dict[str, object] = {
        "model": model,
        "rule": rule,
        "nonspeech_files": len(silent),
        "nonspeech_minutes": minutes,
        "invented_words": invented,
        "invented_per_min": invented / minutes if minutes else float("nan"),
        "files_with_text": sum(1 for o in silent if words(o.texts[rule])),
        "speech_clips": len(spoken),
        "lost": [o.id for o in spoken if words(o.texts[rule]) < words(o.texts["as decoded"])],
    }
    for name, kinds in (("digits", {"digit"}), ("other", {"speech"}), ("speech", {"digit", "speech"})):
        figures[f"wer_{name}"] = _wer([o for o in outcomes if o.kind in kinds], rule)
    return figures


def _wer(outcomes: Sequence[Outcome], rule: str) -> float:
    references = [normalise(o.reference, o.language) for o in outcomes]
    hypotheses = [normalise(o.texts[rule], o.language) for o in outcomes]
    return scores(references, hypotheses, [o.language for o in outcomes])[0]


def table(figures: Sequence[dict[str, object]]) -> str:
    """The summaries as a markdown table."""
    lines = [
        "| model | rule | non-speech files (min) | invented words / min | files with text | speech clips "
        "| digit WER % | other speech WER % | all speech WER % | speech clips that lost words |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lost = f["lost"]
        assert isinstance(lost, list)
        bold = "**" if f["rule"] == "drop_nonspeech" else ""
        lines.append(
            f"| {f['model']} | {bold}{f['rule']}{bold} | {f['nonspeech_files']} ({_num(f['nonspeech_minutes'], 1)}) "
            f"| {bold}{_num(f['invented_per_min'], 1)}{bold} | {f['files_with_text']} | {f['speech_clips']} "
            f"| {_num(f['wer_digits'], 2, 100)} | {_num(f['wer_other'], 2, 100)} | {_num(f['wer_speech'], 2, 100)} "
            f"| {len(lost)} |"
        )
    named = sorted({normaliser_name(language) for language in ("en", "es")})
    lines.append(
        f'\nInvented words counted after Whisper\'s basic normaliser (fillers such as "Mmm" count); WER scored '
        f"after the scoring normalisers ({', '.join(named)})."
    )
    return "\n".join(lines)


def _num(value: object, digits: int, scale: float = 1.0) -> str:
    assert isinstance(value, int | float)
    return f"{value * scale:.{digits}f}"


def measure(model: str, settings: Settings, per_language: int, journal: Path) -> list[dict[str, object]]:
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
    return [summary(model, outcomes, rule) for rule in RULES]


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
    figures = [
        row for model in args.models.split(",") for row in measure(model, settings, args.speech_per_language, journal)
    ]
    report = table(figures)
    (folder / "nonspeech.md").write_text(report + "\n")
    (folder / "nonspeech.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(report)
    print(f"\nwritten to {folder}")


if __name__ == "__main__":
    main()

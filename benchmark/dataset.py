"""Test sets: a manifest (TSV, CSV or JSONL) or a folder of `audios/` and `text-references/`."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.languages import to_code

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4", ".mkv", ".aac", ".wma", ".aiff"}


@dataclass(frozen=True)
class Clip:
    """One recording with the text it should be transcribed as."""

    id: str
    audio: Path
    reference: str
    language: str | None = None
    source: str = ""
    ref_quality: str = "exact"
    duration: float | None = None


@dataclass(frozen=True)
class Skipped:
    """A manifest row (or clip) left out of a run, and why."""

    id: str
    reason: str


def language_label(value: str | None) -> str | None:
    """A language label as codes: `Spanish` is `es`, `zh+EN` (code-switched) is `zh+en`; ValueError if unknown."""
    if not value or not value.strip():
        return None
    codes = [to_code(part) for part in value.split("+")]
    if any(code is None for code in codes):
        raise ValueError(f"unknown language {value!r}")
    return "+".join(code for code in codes if code)


def spoken_language(clip: Clip) -> str | None:
    """The language to ask the engine for: the clip's own, or None (detected) when it is code-switched or unset."""
    return clip.language if clip.language and "+" not in clip.language else None


@dataclass(frozen=True)
class Filters:
    """Which clips of a set to use."""

    languages: frozenset[str] = field(default_factory=frozenset)
    sources: tuple[str, ...] = ()
    ref_qualities: frozenset[str] = field(default_factory=frozenset)
    min_duration: float = 0.0
    max_clips: int | None = None
    max_per_language: int | None = None

    def keep(self, clip: Clip) -> bool:
        """True if the clip passes every filter."""
        return (
            (not self.languages or clip.language in self.languages)
            and (not self.sources or any(name in clip.source for name in self.sources))
            and (not self.ref_qualities or clip.ref_quality.split(" ")[0] in self.ref_qualities)
            and (clip.duration is None or clip.duration >= self.min_duration)
        )

    def apply(self, clips: Iterable[Clip]) -> list[Clip]:
        """The clips that pass: at most max_per_language of each language, then max_clips, taken evenly."""
        kept = [clip for clip in clips if self.keep(clip)]
        if self.max_per_language is not None:
            languages = dict.fromkeys(clip.language for clip in kept)
            kept = [
                c for lang in languages for c in _spread([c for c in kept if c.language == lang], self.max_per_language)
            ]
        return _spread(kept, self.max_clips)


def _spread(clips: list[Clip], limit: int | None) -> list[Clip]:
    """At most `limit` clips, taken evenly across the list."""
    if limit is None or len(clips) <= limit:
        return clips
    step = len(clips) / limit
    return [clips[int(index * step)] for index in range(limit)]


def _rows(path: Path) -> Iterator[tuple[int, dict[Any, Any]]]:
    """Numbered rows; a JSONL line that is not a JSON object comes as an empty row, reported as such."""
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                yield number, _json_object(line)
        return
    with path.open(newline="") as handle:
        yield from enumerate(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","), start=2)


def _json_object(line: str) -> dict[Any, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return row if isinstance(row, dict) else {}


def _text(row: dict[Any, Any], column: str, empty: bool = False) -> str:
    value = row.get(column)
    if value is None or not (empty or str(value).strip()):
        raise ValueError(f"no {column}")
    return str(value)


def _duration(row: dict[Any, Any]) -> float | None:
    value = row.get("duration_s") or row.get("duration")
    try:
        return float(value) if value else None
    except ValueError:
        raise ValueError(f"duration {value!r} is not a number") from None


def clip_from_row(row: dict[Any, Any], number: int, folder: Path) -> Clip:
    """The clip a manifest row describes; ValueError saying what is wrong with the row."""
    if None in row:
        raise ValueError("more columns than the header")
    audio = Path(_text(row, "audio"))
    clip = Clip(
        id=str(row.get("id") or audio.stem or number),
        audio=audio if audio.is_absolute() else folder / audio,
        reference=_text(row, "reference", empty=True),  # empty: no speech, so no text is right
        language=language_label(row.get("language")),
        source=str(row.get("source", "")),
        ref_quality=str(row.get("ref_quality") or "exact"),
        duration=_duration(row),
    )
    if not clip.audio.is_file():
        raise ValueError(f"audio file missing: {row['audio']}")
    return clip


def read_manifest(path: Path) -> tuple[list[Clip], list[Skipped]]:
    """Clips from a manifest with at least `audio` and `reference` columns (audio paths relative to it), and the
    rows left out: unreadable, an unknown language, a missing audio file."""
    clips, skipped = [], []
    for number, row in _rows(path):
        try:
            clips.append(clip_from_row(row, number, path.parent))
        except ValueError as error:
            skipped.append(Skipped(id=str(row.get("id") or f"line {number}"), reason=str(error)))
    return clips, skipped


def load_manifest(path: Path) -> list[Clip]:
    """The clips of a manifest; rows that cannot be run are logged and left out."""
    clips, skipped = read_manifest(path)
    for row in skipped:
        log.warning("%s: %s left out: %s", path.name, row.id, row.reason)
    return clips


def reference_for(stem: str, references: dict[str, Path]) -> Path | None:
    """The reference of an audio file: same name, else the name without its last `-variant`, repeatedly."""
    while True:
        if stem in references:
            return references[stem]
        if "-" not in stem:
            return None
        stem = stem.rsplit("-", 1)[0]


def load_folder(path: Path, language: str | None = None) -> list[Clip]:
    """Clips from `audios/` scored against `text-references/` (`sample1-loud.m4a` against `sample1.txt`)."""
    references = {ref.stem: ref for ref in (path / "text-references").glob("*.txt")}
    language = language_label(language)
    clips = []
    for audio in sorted((path / "audios").iterdir()):
        if audio.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        reference = reference_for(audio.stem, references)
        if reference is None:
            raise ValueError(f"no reference in text-references/ for {audio.name}")
        clips.append(
            Clip(
                id=audio.stem, audio=audio, reference=reference.read_text().strip(), language=language, source=path.name
            )
        )
    return clips

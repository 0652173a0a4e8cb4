"""Test sets: a manifest (TSV, CSV or JSONL) or a folder of `audios/` and `text-references/`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


def _rows(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))


def load_manifest(path: Path) -> list[Clip]:
    """Clips from a manifest with at least `audio` and `reference` columns; audio paths are relative to it."""
    clips = []
    for number, row in enumerate(_rows(path), start=1):
        audio = Path(row["audio"])
        duration = row.get("duration_s") or row.get("duration")
        clips.append(
            Clip(
                id=str(row.get("id") or audio.stem or number),
                audio=audio if audio.is_absolute() else path.parent / audio,
                reference=str(row["reference"]),
                language=row.get("language") or None,
                source=str(row.get("source", "")),
                ref_quality=str(row.get("ref_quality") or "exact"),
                duration=float(duration) if duration else None,
            )
        )
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

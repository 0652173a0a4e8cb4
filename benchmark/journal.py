"""Outcomes written as a run goes, one JSON line per clip, so that a killed run keeps what it measured and
`--resume` can go on from there."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.dataset import Clip
from benchmark.runners import Outcome

JOURNAL = "outcomes.jsonl"
COMMAND = "command.json"

Key = tuple[str, str]  # (path, model)


@dataclass
class Earlier:
    """What earlier sessions of a run measured along one path with one model."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)  # per session: the last clip's time since its start

    def total_wall_s(self) -> float:
        """Wall time of the earlier sessions together."""
        return sum(self.wall_s.values())


class Journal:
    """An append-only JSONL of outcomes, flushed after every clip; safe to record from several threads."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / JOURNAL
        self.session = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"  # two may start in one second
        self._lock = threading.Lock()
        self._handle = self.path.open("a", encoding="utf-8")
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self._handle.write("\n")  # a line cut short by a kill: the next record starts a line of its own

    def record(self, outcome: Outcome, elapsed_s: float) -> None:
        """One outcome, on disk before the next clip starts."""
        line = json.dumps({**_fields(outcome), "session": self.session, "elapsed_s": round(elapsed_s, 3)})
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fields(o: Outcome) -> dict[str, Any]:
    return {
        "path": o.path,
        "model": o.model,
        "clip": o.clip.id,
        "language": o.language,
        "hypothesis": o.hypothesis,
        "audio_s": o.audio_s,
        "latency_s": o.latency_s,
        "processing_s": o.processing_s,
        "queued_s": o.queued_s,
        "error": o.error,
    }


def _outcome(record: dict[str, Any], clip: Clip) -> Outcome:
    return Outcome(
        clip=clip,
        path=record["path"],
        model=record["model"],
        hypothesis=record["hypothesis"],
        language=record["language"],
        audio_s=record["audio_s"],
        latency_s=record["latency_s"],
        processing_s=record["processing_s"],
        queued_s=record["queued_s"],
        error=record["error"],
    )


def _records(path: Path) -> list[dict[str, Any]]:
    """The journal's complete lines; a last line cut short by a kill is left out."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def earlier(folder: Path, clips: Sequence[Clip]) -> dict[Key, Earlier]:
    """What the run in `folder` measured already, by path and model: its last outcome of each clip that is in
    `clips` and did not fail (a failed clip is tried again), and the wall time of each session."""
    by_id = {clip.id: clip for clip in clips}
    found: dict[Key, Earlier] = defaultdict(Earlier)
    for record in _records(folder / JOURNAL):
        part = found[(record["path"], record["model"])]
        part.wall_s[record["session"]] = max(part.wall_s.get(record["session"], 0.0), record["elapsed_s"])
        if record["clip"] in by_id and not record["error"]:
            part.outcomes[record["clip"]] = _outcome(record, by_id[record["clip"]])
    return dict(found)


def save_command(folder: Path, argv: Sequence[str]) -> None:
    """The arguments a run was started with, for `--resume`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / COMMAND).write_text(json.dumps({"argv": list(argv)}, indent=2) + "\n")


def load_command(folder: Path) -> list[str]:
    """The arguments the run in `folder` was started with."""
    if not (folder / COMMAND).is_file():
        raise SystemExit(f"nothing to resume in {folder}: it has no {COMMAND}")
    argv: list[str] = json.loads((folder / COMMAND).read_text())["argv"]
    return argv


def latest_run(out: Path) -> Path:
    """The newest run folder under `out` that has a journal."""
    runs = sorted(folder for folder in out.glob("*") if (folder / COMMAND).is_file())
    if not runs:
        raise SystemExit(f"nothing to resume under {out}")
    return runs[-1]


def new_run(out: Path) -> Path:
    """A fresh folder for a run under `out`, named by its start time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, number = out / stamp, 1
    while folder.exists():
        number += 1
        folder = out / f"{stamp}-{number}"
    folder.mkdir(parents=True)
    return folder

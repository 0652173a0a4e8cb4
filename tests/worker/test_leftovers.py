"""What processes killed mid-write leave on the volume is removed by a worker, and nothing still in use is."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from redis import Redis

from shared import keys
from shared.settings import Settings
from tests.conftest import StartWorker

HOUR = 3600.0


def left(volume: Path, relative: str, age_s: float) -> str:
    """A file on the volume last written `age_s` ago (and its folders, as old)."""
    path = volume / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 1024)
    when, relative_path = time.time() - age_s, path.relative_to(volume)
    for item in [relative_path, *relative_path.parents[:-1]]:
        os.utime(volume / item, (when, when))
    return relative


def name() -> str:
    return uuid.uuid4().hex


def on_volume(volume: Path) -> set[str]:
    return {str(path.relative_to(volume)) for path in volume.rglob("*") if path.is_file()}


def test_a_worker_clears_what_killed_processes_left_on_the_volume(
    settings: Settings, start_worker: StartWorker, redis: Redis
) -> None:
    volume, ttl = settings.uploads, settings.task_ttl_s
    gone = {
        left(volume, f"{name()}.part", 2 * HOUR),  # an upload whose API process was killed
        left(volume, f".out-{name()}.wav", 2 * HOUR),  # converted audio whose answer was never sent
        left(volume, f".scratch-{name()}/video.mp4", 2 * HOUR),  # a download whose worker was killed
        left(volume, name(), 2 * ttl + HOUR),  # an upload whose task is long gone
        left(volume, f".chunks/{name()}/1/0000.wav", 2 * ttl + HOUR),  # the chunks of a task long gone
    }
    busy_download = f".scratch-{name()}"
    kept = {
        left(volume, f"{name()}.part", 0.2 * HOUR),  # an upload still arriving
        left(volume, f"{busy_download}/fresh.part", 60),  # a download still being written...
        left(volume, f"{busy_download}/old.part", 2 * HOUR),  # ...in an old folder (this makes it as old)
        left(volume, name(), 24 * HOUR),  # an upload whose task may wait on a queue
        left(volume, f".chunks/{name()}/1/0000.wav", 24 * HOUR),
        left(volume, "notes.txt", 2 * ttl + HOUR),  # not the service's
    }
    log = start_worker().finish()
    assert on_volume(volume) == kept
    removed = {"/".join(Path(path).parts[: 2 if path.startswith(".chunks") else 1]) for path in gone}
    assert "removed 5 leftovers" in log and all(f"'{path}'" in log for path in removed), log[-3000:]

    another = {left(volume, f"{name()}.part", 2 * HOUR), left(volume, name(), 2 * ttl + HOUR)}
    start_worker().finish()
    assert on_volume(volume) == kept | another, "one worker of the fleet looks in each period"

    redis.delete(keys.leftover_sweep_key())  # the next period
    start_worker(keep_uploads=True).finish()
    kept_upload = {path for path in another if not path.endswith(".part")}
    assert on_volume(volume) == kept | kept_upload, "uploads kept on purpose are not leftovers"

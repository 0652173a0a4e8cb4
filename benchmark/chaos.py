"""Chaos run: real clips through a real stack while workers are killed at random and Redis restarts once.

    python -m benchmark.chaos --tasks 100 --workers 3 --kill-every 2,5 --time-limit 900

Starts its own redis-server, API and workers (tiny.en) in a temporary folder, submits the clips, then
SIGKILLs a random worker every few seconds (and starts a new one), restarts Redis once half way, and
waits until every task has finished or the time limit passes. It prints how many tasks completed,
failed, were lost or duplicated, and whether each result matches a clean run of the engine.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

from benchmark.dataset import Clip, Filters, load_manifest
from benchmark.runners import EngineRunner
from shared.settings import Settings
from whisperq.redis_server import RedisServer, free_port

MODEL = "tiny.en"


def clips_for(manifest: Path, count: int) -> list[Clip]:
    """Short English clips with exact or scripted references."""
    chosen = Filters(languages=frozenset({"en"}), ref_qualities=frozenset({"exact", "script"}), max_clips=count)
    return chosen.apply(c for c in load_manifest(manifest) if (c.duration or 0) <= 12)


def clean_run(clips: list[Clip], settings: Settings) -> dict[str, str]:
    """What the engine makes of each clip without any chaos."""
    engine = EngineRunner(MODEL, settings)
    return {clip.id: engine.run(clip).hypothesis for clip in clips}


class Fleet:
    """The API and the workers as child processes, all logging to one file."""

    def __init__(self, settings: Settings, log: IO[bytes]) -> None:
        self.env = dict(os.environ, **settings.as_env())
        self.log = log
        self.api = self._spawn("api")
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, role: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "whisperq", role], env=self.env, stdout=self.log, stderr=self.log
        )

    def add_worker(self) -> None:
        self.workers.append(self._spawn("worker"))

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a random worker and start another in its place."""
        victim = rng.choice(self.workers)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.workers.remove(victim)
        self.add_worker()

    def stop(self) -> None:
        for child in [*self.workers, self.api]:
            child.send_signal(signal.SIGTERM)
        for child in [*self.workers, self.api]:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


def submit_all(client: httpx.Client, clips: list[Clip]) -> dict[str, Clip]:
    """Every clip as a task; task id to clip."""
    ids = {}
    for clip in clips:
        with clip.audio.open("rb") as handle:
            response = client.post(
                "/v1/tasks", files={"file": (clip.audio.name, handle)}, data={"model": MODEL, "language": "en"}
            )
        response.raise_for_status()
        ids[response.json()["id"]] = clip
    return ids


def statuses(client: httpx.Client, ids: dict[str, Clip]) -> dict[str, dict[str, Any] | None]:
    """The current state of every task (None where it vanished); tolerant of Redis being away."""
    found: dict[str, dict[str, Any] | None] = {}
    for task_id in ids:
        try:
            response = client.get(f"/v1/tasks/{task_id}")
        except httpx.HTTPError:
            return {}
        if response.status_code == 503:
            return {}
        found[task_id] = response.json() if response.status_code == 200 else None
    return found


def wait_for_api(client: httpx.Client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/health").json().get("models") == [MODEL]:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit("the stack did not come up")


def report(
    ids: dict[str, Clip],
    final: dict[str, dict[str, Any] | None],
    clean: dict[str, str],
    log_text: str,
    kills: int,
    elapsed: float,
) -> None:
    counts = collections.Counter(
        (task or {}).get("status", "lost") if (task or {}).get("status") in ("completed", "failed") else "lost"
        for task in (final.get(task_id) for task_id in ids)
    )
    failures = collections.Counter(t["error"]["code"] for t in final.values() if t and t["status"] == "failed")
    completed = [t for t in final.values() if t and t["status"] == "completed"]
    matching = sum(t["result"]["text"] == clean[ids[t["id"]].id] for t in completed)
    completions = collections.Counter(re.findall(r"task ([0-9a-f]{32}) completed", log_text))
    doubled = sum(count - 1 for count in completions.values() if count > 1)
    discarded = len(re.findall(r"result discarded", log_text))
    retried = sum(1 for t in completed if t["attempts"] > 1)
    print(f"tasks: {len(ids)}; workers killed: {kills}; Redis restarted: 1; wall time: {elapsed:.0f} s")
    print(
        f"completed: {counts['completed']}; failed: {counts['failed']} {dict(failures) or ''}; lost: {counts['lost']}"
    )
    print(
        f"duplicated (a result written twice): {doubled}; late results discarded: {discarded}; "
        f"completed after a retry: {retried}"
    )
    print(f"results identical to a clean engine run: {matching} of {len(completed)}")
    for t in completed:
        clip = ids[t["id"]]
        if t["result"]["text"] != clean[clip.id]:
            print(
                f"  differs: {clip.id} (attempts {t['attempts']}): clean {clean[clip.id]!r}, "
                f"chaos {t['result']['text']!r}, reference {clip.reference!r}"
            )


def chaos(args: argparse.Namespace) -> None:
    clips = clips_for(args.manifest, args.tasks)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="whisperq-chaos-") as scratch:
        root = Path(scratch)
        settings = Settings(
            data_dir=root,
            model=MODEL,
            default_model=MODEL,
            api_port=free_port(),
            worker_ttl_s=5,
            log_level="info",
            max_queued_tasks=max(10_000, args.tasks),
        )
        print(f"clean engine run of {len(clips)} clips...", flush=True)
        clean = clean_run(clips, settings)
        redis_server = RedisServer(root / "redis")
        redis_server.start()
        settings = settings.model_copy(update={"redis_url": redis_server.url})
        log_path = root / "fleet.log"
        with (
            log_path.open("ab") as log,
            httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=30) as client,
        ):
            fleet = Fleet(settings, log)
            for _ in range(args.workers):
                fleet.add_worker()
            wait_for_api(client)
            ids = submit_all(client, clips)
            started, kills, restarted = time.monotonic(), 0, False
            next_kill = started + rng.uniform(*args.kill_every)
            final: dict[str, dict[str, Any] | None] = {}
            while time.monotonic() - started < args.time_limit:
                now = time.monotonic()
                if now >= next_kill:
                    fleet.kill_one(rng)
                    kills += 1
                    next_kill = now + rng.uniform(*args.kill_every)
                seen = statuses(client, ids)
                if seen:
                    final = seen
                    finished = sum(1 for t in seen.values() if t and t["status"] in ("completed", "failed"))
                    if not restarted and finished >= len(ids) // 2:
                        print("restarting Redis...", flush=True)
                        redis_server.stop()
                        time.sleep(2)
                        redis_server.start()
                        restarted = True
                    elif finished == len(ids):
                        break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            fleet.stop()
        redis_server.stop()
        report(ids, final, clean, log_path.read_text(errors="replace"), kills, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("../shared/data/manifest.tsv"))
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--kill-every",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(2.0, 5.0),
        help="seconds between kills: min,max (default 2,5)",
    )
    parser.add_argument("--time-limit", type=float, default=900)
    parser.add_argument("--seed", type=int, default=1)
    chaos(parser.parse_args())


if __name__ == "__main__":
    main()

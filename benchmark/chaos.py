"""Chaos run: real clips through a real stack while workers are killed at random and Redis goes away twice.

    python -m benchmark.chaos --tasks 100 --workers 3 --kill-every 2,5 --time-limit 900

Starts its own redis-server, API and workers (tiny.en) in a temporary folder, and a callback receiver that
every task names. It submits the clips, then SIGKILLs a random worker every few seconds (and starts a new one),
restarts Redis a third of the way through, and freezes it (SIGSTOP) for longer than WORKER_TTL_S two thirds of
the way through, so every worker's announcement lapses while it is away. It waits until every task has finished
and its callback has settled, or the time limit passes, and prints:

- tasks completed of all, failed, and lost (neither);
- decoded twice: runs of a task beyond its first, counted from the task's event stream, and how many of them a
  worker killed mid-job explains (after each kill the harness notes which tasks the dead worker held); the rest
  are runs that no death explains;
- callbacks: webhook-ids the receiver got, duplicate deliveries (an id received more than once), and the tasks
  the receiver processed once by deduplicating on webhook-id;
- whether each result matches a clean run of the engine.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from redis.exceptions import RedisError

from benchmark.dataset import Clip, Filters, load_manifest
from benchmark.runners import EngineRunner
from benchmark.webhooks import WebhookReceiver
from shared.connection import connect
from shared.settings import Settings
from shared.stores import Stores
from whisperq.redis_server import RedisServer, free_port

MODEL = "tiny.en"
SECRET = "whsec_" + base64.b64encode(b"whisperq chaos run webhook secret").decode()
FINISHED = ("completed", "failed")
SETTLED = ("delivered", "failed")


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

    def kill_one(self, rng: random.Random) -> int:
        """SIGKILL a random worker and start another in its place; the dead one's pid."""
        victim = rng.choice(self.workers)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.workers.remove(victim)
        self.add_worker()
        return victim.pid

    def stop(self) -> None:
        for child in [*self.workers, self.api]:
            child.send_signal(signal.SIGTERM)
        for child in [*self.workers, self.api]:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


@dataclass
class Disturbances:
    """What the harness did, and which runs its kills cut short, noted right after each kill."""

    kills: int = 0
    cut_short: collections.Counter[str] = field(default_factory=collections.Counter)  # task id: runs killed
    unattributed: int = 0  # kills after which Redis could not say what the dead worker held
    restarts: int = 0
    frozen_s: float = 0.0


def worker_pid(worker_id: str) -> int | None:
    """The process id inside a worker id (`host-pid-suffix`)."""
    parts = worker_id.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def kill_one(fleet: Fleet, rng: random.Random, stores: Stores, seen: Disturbances) -> None:
    """Kill a worker, then note the tasks it held: a dead worker writes nothing more, so its name is still on them."""
    pid = fleet.kill_one(rng)
    seen.kills += 1
    try:
        held = [task.id for task in stores.tasks.running() if task.worker and worker_pid(task.worker) == pid]
    except RedisError:
        seen.unattributed += 1
        return
    seen.cut_short.update(held)


def disturb_redis(server: RedisServer, finished: int, total: int, seen: Disturbances, freeze_s: float) -> None:
    """A restart a third of the way through; a freeze longer than the worker TTL two thirds of the way."""
    if not seen.restarts and finished >= total // 3:
        print("restarting Redis...", flush=True)
        server.stop()
        time.sleep(2)
        server.start()
        seen.restarts += 1
    elif not seen.frozen_s and finished >= 2 * total // 3:
        assert server.process is not None
        print(f"freezing Redis for {freeze_s:g} s...", flush=True)
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(freeze_s)
        server.process.send_signal(signal.SIGCONT)
        seen.frozen_s = freeze_s


def submit_all(client: httpx.Client, clips: list[Clip], callback_url: str) -> dict[str, Clip]:
    """Every clip as a task with a callback; task id to clip."""
    ids = {}
    for clip in clips:
        with clip.audio.open("rb") as handle:
            response = client.post(
                "/v1/tasks",
                files={"file": (clip.audio.name, handle)},
                data={"model": MODEL, "language": "en", "callback_url": callback_url},
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


def settled(task: dict[str, Any] | None) -> bool:
    """Finished, with its callback delivered or given up."""
    return bool(task and task["status"] in FINISHED and (task["callback"] or {}).get("status") in SETTLED)


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


def decoding_runs(events: list[tuple[str, dict[str, str]]]) -> int:
    """Runs of a task that started decoding, read from its event stream.

    Each run moves the task to `processing` (a status event) and streams its segments from the first. A run
    that starts while another still holds the task moves no status, so the first segments are counted too.
    """
    starts = sum(1 for _, event in events if event.get("type") == "status" and event.get("status") == "processing")
    first_ids = [json.loads(e["segment"])["id"] for _, e in events if e.get("type") == "segment"]
    firsts = first_ids.count(min(first_ids)) if first_ids else 0
    return max(starts, firsts)


def drive(
    client: httpx.Client,
    fleet: Fleet,
    server: RedisServer,
    stores: Stores,
    ids: dict[str, Clip],
    args: argparse.Namespace,
    freeze_s: float,
) -> tuple[Disturbances, dict[str, dict[str, Any] | None]]:
    """Kill workers and disturb Redis until every task and callback has settled or time runs out."""
    rng = random.Random(args.seed)
    seen = Disturbances()
    started = time.monotonic()
    next_kill = started + rng.uniform(*args.kill_every)
    final: dict[str, dict[str, Any] | None] = {}
    while time.monotonic() - started < args.time_limit:
        if time.monotonic() >= next_kill:
            kill_one(fleet, rng, stores, seen)
            next_kill = time.monotonic() + rng.uniform(*args.kill_every)
        current = statuses(client, ids)
        if current:
            final = current
            finished = sum(1 for t in current.values() if t and t["status"] in FINISHED)
            if not (seen.restarts and seen.frozen_s):
                disturb_redis(server, finished, len(ids), seen, freeze_s)
            elif all(settled(t) for t in current.values()):
                break
        time.sleep(0.5)
    return seen, final


def report_tasks(
    ids: dict[str, Clip],
    final: dict[str, dict[str, Any] | None],
    runs: dict[str, int],
    seen: Disturbances,
    log_text: str,
) -> None:
    """Tasks completed, failed and lost; runs beyond a task's first, and which of them a kill explains."""
    tasks = [final.get(task_id) for task_id in ids]
    counts = collections.Counter(t["status"] if t and t["status"] in FINISHED else "lost" for t in tasks)
    failures = collections.Counter(t["error"]["code"] for t in tasks if t and t["status"] == "failed")
    print(
        f"completed: {counts['completed']}/{len(ids)}; failed: {counts['failed']} {dict(failures) or ''}; "
        f"lost: {counts['lost']}"
    )
    extra = {task_id: n - 1 for task_id, n in runs.items() if n > 1}
    explained = {task_id: min(n, seen.cut_short[task_id]) for task_id, n in extra.items()}
    twice, by_kills = sum(extra.values()), sum(explained.values())
    print(
        f"decoded twice: {twice} runs beyond a task's first, on {len(extra)} tasks; explained by a worker killed "
        f"mid-job: {by_kills}; unexplained: {twice - by_kills} (runs cut short by a kill: {seen.cut_short.total()})"
    )
    for task_id, n in extra.items():
        if n > explained[task_id]:
            print(f"  unexplained: task {task_id} ran {n + 1} times; kills cut short {seen.cut_short[task_id]} of them")
    retried = sum(1 for t in tasks if t and t["status"] == "completed" and t["attempts"] > 1)
    print(
        f"late results discarded: {len(re.findall(r'result discarded', log_text))}; completed after a retry: {retried}"
    )


def report_callbacks(final: dict[str, dict[str, Any] | None], receiver: WebhookReceiver) -> None:
    """Callbacks received, repeated (with the attempts the task recorded), and processed once by webhook-id."""
    finished = {t["id"]: t for t in final.values() if t and t["status"] in FINISHED}
    recorded = collections.Counter((t["callback"] or {}).get("status") for t in finished.values())
    print(
        f"callbacks delivered: {len(receiver.received)} of {len(finished)} finished tasks (recorded delivered: "
        f"{recorded['delivered']}, failed: {recorded['failed']}); bad signatures: {receiver.invalid}"
    )
    print(f"duplicate deliveries (a webhook-id received more than once): {receiver.duplicates}")
    for message_id, count in receiver.received.items():
        task = finished.get(message_id.removeprefix("msg_"))
        if count > 1 and task:
            attempts = [d["error"] or d["status_code"] for d in task["callback"]["deliveries"]]
            print(f"  {message_id}: received {count} times; attempts recorded on the task: {attempts}")
    agreeing = sum(receiver.processed.get(f"msg_{i}") == f"task.{t['status']}" for i, t in finished.items())
    print(
        f"processed once per webhook-id by the deduplicating receiver: {len(receiver.processed)} (agreeing with "
        f"the task's final status: {agreeing}; finished tasks never processed: {len(finished) - agreeing})"
    )


def report_accuracy(ids: dict[str, Clip], final: dict[str, dict[str, Any] | None], clean: dict[str, str]) -> None:
    """How many results match the clean engine run, and how the others differ."""
    completed = [t for t in final.values() if t and t["status"] == "completed"]
    print(
        f"results identical to a clean engine run: "
        f"{sum(t['result']['text'] == clean[ids[t['id']].id] for t in completed)} of {len(completed)}"
    )
    for t in completed:
        clip = ids[t["id"]]
        if t["result"]["text"] != clean[clip.id]:
            print(
                f"  differs: {clip.id} (attempts {t['attempts']}): clean {clean[clip.id]!r}, "
                f"chaos {t['result']['text']!r}, reference {clip.reference!r}"
            )


def chaos(args: argparse.Namespace) -> None:
    clips = clips_for(args.manifest, args.tasks)
    with tempfile.TemporaryDirectory(prefix="whisperq-chaos-") as scratch, WebhookReceiver(SECRET) as receiver:
        root = Path(scratch)
        settings = Settings(
            data_dir=root,
            model=MODEL,
            default_model=MODEL,
            api_port=free_port(),
            worker_ttl_s=5,
            log_level="info",
            max_queued_tasks=max(10_000, args.tasks),
            webhook_secret=SECRET,
            allowed_hosts=["127.0.0.1"],  # the receiver
            callback_timeout_s=5,
            callback_backoff_s=1,
        )
        freeze_s = args.freeze_s or settings.worker_ttl_s + 3
        print(f"clean engine run of {len(clips)} clips...", flush=True)
        clean = clean_run(clips, settings)
        redis_server = RedisServer(root / "redis")
        redis_server.start()
        settings = settings.model_copy(update={"redis_url": redis_server.url})
        stores = Stores.open(connect(redis_server.url, patient=True), settings)
        log_path = root / "fleet.log"
        with (
            log_path.open("ab") as log,
            httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=30) as client,
        ):
            fleet = Fleet(settings, log)
            for _ in range(args.workers):
                fleet.add_worker()
            wait_for_api(client)
            ids = submit_all(client, clips, receiver.url)
            started = time.monotonic()
            seen, final = drive(client, fleet, redis_server, stores, ids, args, freeze_s)
            elapsed = time.monotonic() - started
            fleet.stop()
        runs = {task_id: decoding_runs(stores.events.after(task_id, "0")) for task_id in ids}
        redis_server.stop()
        print(
            f"tasks: {len(ids)}; workers killed: {seen.kills} ({seen.cut_short.total()} mid-job, "
            f"{seen.unattributed} unattributed); Redis restarted: {seen.restarts}; Redis frozen: "
            f"{seen.frozen_s:g} s (WORKER_TTL_S {settings.worker_ttl_s} s); wall time: {elapsed:.0f} s"
        )
        report_tasks(ids, final, runs, seen, log_path.read_text(errors="replace"))
        report_callbacks(final, receiver)
        report_accuracy(ids, final, clean)


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
    parser.add_argument(
        "--freeze-s", type=float, default=None, help="how long Redis is frozen (default: WORKER_TTL_S + 3)"
    )
    parser.add_argument("--seed", type=int, default=1)
    chaos(parser.parse_args())


if __name__ == "__main__":
    main()

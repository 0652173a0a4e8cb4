"""First-page listing time with many tasks, over real HTTP against a real redis-server.

    python -m benchmark.listing --tasks 10000 --runs 50

Starts its own redis-server and API on loopback, writes the tasks through the task store,
then times GET /v1/tasks with no filter, one filter and two filters (median and p95).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn
from redis import Redis

from api.main import create_app
from shared.clock import utcnow
from shared.enums import Priority, TaskStatus, TaskType
from shared.schemas import Source, Task, TranscribeOptions
from shared.settings import Settings
from shared.store import TaskStore
from whisperq.redis_server import RedisServer, free_port

QUERIES = {
    "no filter": {},
    "status=completed": {"status": "completed"},
    "status=completed&model=base": {"status": "completed", "model": "base"},
    "priority=high&language=es": {"priority": "high", "language": "es"},
}


def fill(store: TaskStore, count: int) -> None:
    """Write `count` tasks with varied fields, created over the last day."""
    now = utcnow()
    rng = random.Random(7)
    for start in range(0, count, 1000):
        pipe = store.redis.pipeline()
        for index in range(start, min(count, start + 1000)):
            task = Task(
                id=uuid.uuid4().hex,
                status=rng.choice(list(TaskStatus)),
                task_type=rng.choice(list(TaskType)),
                priority=rng.choice(list(Priority)),
                model=rng.choice(["tiny.en", "base", "large-v3"]),
                options=TranscribeOptions(),
                language=rng.choice(["en", "es", "it", None]),
                source=Source(),
                created_at=now - timedelta(seconds=index * 8),
            )
            store.create(task, pipe)
        pipe.execute()


def time_query(client: httpx.Client, params: dict[str, str], runs: int) -> tuple[float, float, int]:
    """Median and p95 milliseconds of one listing, and the total it reports."""
    samples = []
    total = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get("/v1/tasks", params=params)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        total = response.json()["total"]
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        redis_server = RedisServer(Path(scratch) / "redis")
        redis_server.start()
        try:
            settings = Settings(redis_url=redis_server.url, data_dir=Path(scratch))
            fill(TaskStore(Redis.from_url(redis_server.url), settings.task_ttl_s), args.tasks)
            port = free_port()
            server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.02)
            print(f"{args.tasks} tasks; first page of 20, {args.runs} runs each, over HTTP on loopback\n")
            print("| query | matching | median ms | p95 ms |\n|---|---|---|---|")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                for name, params in QUERIES.items():
                    median, p95, total = time_query(client, params, args.runs)
                    print(f"| {name} | {total} | {median:.1f} | {p95:.1f} |")
            server.should_exit = True
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()

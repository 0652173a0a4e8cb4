"""End-to-end time through a running service: submit a file, poll until done, print the figures.

python -m benchmark.e2e --url http://127.0.0.1:8000 --model base --runs 5 FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import httpx


def run_once(client: httpx.Client, path: Path, model: str | None) -> dict[str, Any]:
    """Submit one file and poll until it finishes; returns the task with the client-side wall time."""
    started = time.perf_counter()
    with path.open("rb") as handle:
        response = client.post("/v1/tasks", files={"file": (path.name, handle)}, data={"model": model} if model else {})
    response.raise_for_status()
    task_id = response.json()["id"]
    while (task := client.get(f"/v1/tasks/{task_id}").json())["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
    task["wall_s"] = time.perf_counter() - started
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| file | audio s | runs | end-to-end s (median) | processing s (median) | real-time factor (median) |")
    print("|---|---|---|---|---|---|")
    with httpx.Client(base_url=args.url, timeout=60) as client:
        for path in args.files:
            tasks = [run_once(client, path, args.model) for _ in range(args.runs)]
            failed = [t for t in tasks if t["status"] != "completed"]
            if failed:
                raise SystemExit(f"{path.name}: {failed[0]['status']} {failed[0]['error']}")
            wall = statistics.median(t["wall_s"] for t in tasks)
            processing = statistics.median(t["processing_seconds"] for t in tasks)
            rtf = statistics.median(t["real_time_factor"] for t in tasks)
            audio = tasks[0]["duration"]
            print(f"| {path.name} | {audio:.1f} | {args.runs} | {wall:.2f} | {processing:.2f} | {rtf:.3f} |")


if __name__ == "__main__":
    main()

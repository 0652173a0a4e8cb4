"""Status-poll throughput beside the static OpenAPI document, under wrk: 50 concurrent keep-alive connections.

    python -m benchmark.polling [--url URL] [--api-key KEY] [--runs 3] [--seconds 10]

Without --url it starts a local stack (embedded Redis, the API, one tiny.en worker). It transcribes the JFK clip
once, then loads each route in turn with wrk (Debian's package of that name) and prints, per route, the median of
the runs: requests/s, p50 and p99 latency, and the rate as a share of /openapi.json's in the same runs.

wrk, not ApacheBench: ab speaks HTTP/1.0, whose keep-alive uvicorn declines, so `ab -k` opens a connection for
every request there.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmark.service import local_service
from shared.settings import Settings

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
JFK = DATA / "audio" / "faster_whisper" / "jfk.flac"
CONCURRENCY = 50
BASELINE = "/openapi.json"


@dataclass(frozen=True)
class Target:
    """One route as the load generator asks for it, and the status every answer must have."""

    name: str
    path: str
    status: int = 200
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float


def targets(task_id: str, etag: str) -> list[Target]:
    """The routes compared: the static document, health, and a completed task polled three ways."""
    task = f"/v1/tasks/{task_id}"
    return [
        Target(BASELINE, BASELINE),
        Target("/health", "/health"),
        Target(task, task),
        Target(f"{task}?view=status", f"{task}?view=status"),
        Target(f"{task}?view=status, If-None-Match", f"{task}?view=status", 304, (f"If-None-Match: {etag}",)),
    ]


def completed_task(client: httpx.Client) -> str:
    """The id of a JFK task once it has completed, followed by long polls."""
    with JFK.open("rb") as handle:
        response = client.post("/v1/tasks", files={"file": (JFK.name, handle)})
    response.raise_for_status()
    task_id: str = response.json()["id"]
    etag = ""
    for _ in range(60):
        params: dict[str, str | int] = {"view": "status", "wait": 10}
        polled = client.get(f"/v1/tasks/{task_id}", params=params, headers={"If-None-Match": etag})
        if polled.status_code == 200:
            etag = polled.headers.get("etag", "")
            status = polled.json()["status"]
            if status == "completed":
                return task_id
            if status in ("failed", "cancelled"):
                raise SystemExit(f"the JFK task {status}: {polled.json()['error']}")
    raise SystemExit("the JFK task did not complete in time")


def check(client: httpx.Client, target: Target) -> None:
    """Fail before loading a route that does not answer as expected."""
    headers = dict(header.split(": ", 1) for header in target.headers)
    status = client.get(target.path, headers=headers).status_code
    if status != target.status:
        raise SystemExit(f"{target.name} answered {status}, not {target.status}")


def wrk(url: str, target: Target, seconds: int, api_key: str | None) -> Load:
    """Load one route with wrk: one thread, CONCURRENCY keep-alive connections, for `seconds`."""
    headers = [*target.headers, *([f"Authorization: Bearer {api_key}"] if api_key else [])]
    command = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    command += [arg for header in headers for arg in ("-H", header)]
    done = subprocess.run([*command, url + target.path], capture_output=True, text=True, check=True)
    if "Socket errors" in done.stdout or "Non-2xx" in done.stdout:
        raise SystemExit(f"wrk saw failed requests on {target.name}:\n{done.stdout}")
    return Load(
        rps=float(_figure(done.stdout, r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_milliseconds(_figure(done.stdout, r"^\s+50%\s+(\S+)")),
        p99_ms=_milliseconds(_figure(done.stdout, r"^\s+99%\s+(\S+)")),
    )


def _figure(output: str, pattern: str) -> str:
    match = re.search(pattern, output, re.MULTILINE)
    if match is None:
        raise SystemExit(f"wrk printed no {pattern!r}:\n{output}")
    return match.group(1)


def _milliseconds(duration: str) -> float:
    """wrk's '870.00us', '1.23ms' or '2.01s' in milliseconds."""
    number = re.fullmatch(r"([\d.]+)(us|ms|s)", duration)
    if number is None:
        raise SystemExit(f"wrk printed a latency of {duration!r}")
    return float(number.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[number.group(2)]


def measure(url: str, routes: list[Target], runs: int, seconds: int, api_key: str | None) -> dict[str, Load]:
    """Each route's median over the runs; a short warm-up first, and the routes take turns within a run."""
    for target in routes:
        wrk(url, target, 2, api_key)
    loads: dict[str, list[Load]] = {target.name: [] for target in routes}
    for _ in range(runs):
        for target in routes:
            loads[target.name].append(wrk(url, target, seconds, api_key))
    return {name: _median(samples) for name, samples in loads.items()}


def _median(samples: list[Load]) -> Load:
    return Load(
        rps=statistics.median(s.rps for s in samples),
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
    )


def table(results: dict[str, Load]) -> str:
    """The results as a Markdown table."""
    base = results[BASELINE].rps
    rows = ["| route | requests/s | p50 ms | p99 ms | × openapi.json |", "|---|---|---|---|---|"]
    for name, load in results.items():
        rows.append(f"| `{name}` | {load.rps:,.0f} | {load.p50_ms:.1f} | {load.p99_ms:.1f} | {load.rps / base:.2f} |")
    return "\n".join(rows)


@contextmanager
def service(url: str | None, model: str) -> Iterator[str]:
    """The given URL, or a local stack's while it runs."""
    if url:
        with nullcontext():
            yield url.rstrip("/")
        return
    with local_service(Settings(), model, workers=1) as local:
        yield local.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (default: start a local stack)")
    parser.add_argument("--api-key", help="sent as a bearer token, where the service needs one")
    parser.add_argument("--model", default="tiny.en", help="model of the local stack's worker (default tiny.en)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="load time per route per run (default 10)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    with service(args.url, args.model) as url:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            task_id = completed_task(client)
            etag = client.get(f"/v1/tasks/{task_id}", params={"view": "status"}).headers.get("etag", '""')
            routes = targets(task_id, etag)
            for target in routes:
                check(client, target)
        results = measure(url, routes, args.runs, args.seconds, args.api_key)
    print(f"median of {args.runs} runs of {args.seconds} s per route; wrk, {CONCURRENCY} keep-alive connections\n")
    print(table(results))


if __name__ == "__main__":
    main()

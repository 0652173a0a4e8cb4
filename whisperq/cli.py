"""The `whisperq` command: `up` runs everything locally; `api` and `worker` run one piece each; the rest are clients."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

from shared import logs
from shared.settings import Settings, env_example
from whisperq.client import Client, summary, write_output
from whisperq.lifeline import stop_when_closed
from whisperq.stack import Stack


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)


def _watch_lifeline(args: argparse.Namespace) -> None:
    if args.lifeline is not None:
        stop_when_closed(args.lifeline)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one worker in this process."""
    _watch_lifeline(args)
    settings = Settings(**_overrides(args, "model", "role"))
    _configure_logging(settings)
    from worker.main import run

    run(settings, burst=args.burst)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    """Serve the API in this process."""
    _watch_lifeline(args)
    from whisperq.serve import serve

    settings = Settings(**_overrides(args, "api_host", "api_port"))
    _configure_logging(settings)
    serve(settings)
    return 0


def _client(args: argparse.Namespace) -> Client:
    settings = Settings()
    url = args.url or f"http://{settings.api_host}:{settings.api_port}"
    return Client(url, args.api_key or settings.client_api_key)


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a file or URL; with --wait or -o, follow it with a progress bar and print the result."""
    fields = {"task_type": args.task, "priority": args.priority}
    fields |= {name: value for name, value in (("model", args.model), ("language", args.language)) if value}
    client = _client(args)
    try:
        task = client.submit(args.source, fields)
        print(f"task {task['id']} {task['status']}", file=sys.stderr)
        if not (args.wait or args.output):
            return 0
        final = client.follow(task["id"], sys.stderr)
        if final["status"] != "completed":
            print(summary(final), file=sys.stderr)
            return 1
        write_output(client.result(task["id"], args.format), args.output)
        return 0
    finally:
        client.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Print a task's state."""
    client = _client(args)
    try:
        print(summary(client.task(args.task_id)))
    finally:
        client.close()
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the newest tasks, one a line."""
    client = _client(args)
    try:
        params = {"limit": args.limit, **({"status": args.status} if args.status else {})}
        page = client.tasks(params)
    finally:
        client.close()
    for task in page["tasks"]:
        print(
            f"{task['id']}  {task['status']:<11} {task['progress'] * 100:3.0f}%  {task['model']:<10} "
            f"{task['created_at']}  {task['source'].get('filename') or task['source'].get('url') or ''}"
        )
    print(f"{len(page['tasks'])} of {page['total']}", file=sys.stderr)
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    """Print or save a task's result."""
    client = _client(args)
    try:
        write_output(client.result(args.task_id, args.format), args.output)
    finally:
        client.close()
    return 0


def cmd_env_example(args: argparse.Namespace) -> int:
    """Print .env.example: every setting with its default."""
    print(env_example(), end="")
    return 0


def cmd_new_key(args: argparse.Namespace) -> int:
    """Print a new API key (shown once) and the WHISPERQ_API_KEYS entry that holds only its hash."""
    key = "wq_" + secrets.token_urlsafe(32)
    entry = {
        "name": args.name,
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "admin": args.admin,
        "webhook_secret": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    print(f"API key for {args.name} (give it to them; it is not stored anywhere): {key}")
    print(f"add to WHISPERQ_API_KEYS: {json.dumps(entry)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """The benchmark harness."""
    from benchmark.cli import main as bench

    bench(args.bench_args)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    """Run Redis, the API and workers until Ctrl-C."""
    overrides = _overrides(args, "api_host", "api_port", "model")
    if "model" in overrides:
        overrides["default_model"] = overrides["model"]
    settings = Settings(**overrides)
    if args.workers < 1 or args.live_workers < 0:
        print("--workers must be at least 1, --live-workers at least 0", file=sys.stderr)
        return 2
    stack = Stack(settings, args.workers, live_workers=args.live_workers)
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    # Set, not inherited: a shell starts a background job with SIGINT ignored, and Python keeps it so.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    try:
        stack.start()
        print(f"loading model {settings.served_model}...", flush=True)
        stack.wait_ready(base_url)
        print(f"whisperq is up: API {base_url}  docs {base_url}/docs  (Ctrl-C stops)", flush=True)
        stack.keep_up()
    except KeyboardInterrupt:
        print("stopping...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"whisperq up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when this container's piece is healthy; otherwise say why and exit 1."""
    from whisperq.health import api_problem, worker_problem

    settings = Settings()
    problem = api_problem(settings) if args.piece == "api" else worker_problem(settings)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="whisperq", description="Speech-to-text jobs on Whisper.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run an embedded Redis, the API and workers")
    up.add_argument("--host", dest="api_host", help="address the API listens on")
    up.add_argument("--port", dest="api_port", type=int, help="port the API listens on")
    up.add_argument("--workers", type=int, default=1, help="number of worker processes (default 1)")
    up.add_argument(
        "--live-workers", type=int, default=1, help="workers that serve live sessions only (default 1; 0: none)"
    )
    up.add_argument("--model", help="model the workers serve and tasks use by default")
    up.set_defaults(handler=cmd_up)

    api = commands.add_parser("api", help="run the API")
    api.add_argument("--host", dest="api_host")
    api.add_argument("--port", dest="api_port", type=int)
    api.add_argument("--lifeline", type=int, help=argparse.SUPPRESS)  # from `up`: stop once this fd reads EOF
    api.set_defaults(handler=cmd_api)

    bench = commands.add_parser("bench", help="run the benchmark (python -m benchmark --help)", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=cmd_bench)

    example = commands.add_parser("env-example", help="print every setting with its default (.env.example)")
    example.set_defaults(handler=cmd_env_example)

    health = commands.add_parser("healthcheck", help="exit 0 if the api or worker here is healthy (containers)")
    health.add_argument("piece", choices=["api", "worker"])
    health.set_defaults(handler=cmd_healthcheck)

    new_key = commands.add_parser("new-key", help="make an API key and print its settings entry")
    new_key.add_argument("name", help="the key's owner name")
    new_key.add_argument("--admin", action="store_true", help="the key sees every task")
    new_key.set_defaults(handler=cmd_new_key)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", help="the API (default: http://API_HOST:API_PORT from the settings)")
    client.add_argument("--api-key", help="API key (default: WHISPERQ_CLIENT_API_KEY)")
    formats = ["json", "text", "srt", "vtt", "tsv", "verbose_json"]

    submit = commands.add_parser("submit", parents=[client], help="submit a file or URL")
    submit.add_argument("source", help="a media file, or an http(s) URL")
    submit.add_argument("--model")
    submit.add_argument("--language")
    submit.add_argument("--priority", choices=["high", "normal", "low"], default="normal")
    submit.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    submit.add_argument("--format", choices=formats, default="text", help="result format (default text)")
    submit.add_argument("-o", "--output", help="write the result here (implies --wait)")
    submit.add_argument("--wait", action="store_true", help="follow the task with a progress bar, print the result")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", parents=[client], help="show a task")
    status.add_argument("task_id")
    status.set_defaults(handler=cmd_status)

    listing = commands.add_parser("list", parents=[client], help="list recent tasks")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=cmd_list)

    result = commands.add_parser("result", parents=[client], help="print or save a task's result")
    result.add_argument("task_id")
    result.add_argument("--format", choices=formats, default="text")
    result.add_argument("-o", "--output")
    result.set_defaults(handler=cmd_result)

    worker = commands.add_parser("worker", help="run one worker")
    worker.add_argument("--model", help="model to serve")
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.add_argument(
        "--role", choices=["batch", "live", "both"], help="serve queued tasks, live sessions, or both (default batch)"
    )
    worker.add_argument("--lifeline", type=int, help=argparse.SUPPRESS)
    worker.set_defaults(handler=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `whisperq` command."""
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args))

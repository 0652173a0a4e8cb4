"""The Compose fleet, run for real: build the images, bring up `--scale worker=2`, transcribe real speech, kill a
busy worker, restart Redis, take the fleet down and up again, and check that nothing is lost.

    python3 -m deploy.check            # run by .ci/run after the tests; needs root, podman, runc, debootstrap

Everything it makes (containers, network, volumes, images) is removed at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from benchmark.dataset import Clip, load_manifest
from benchmark.scoring import error_rates
from deploy import images
from deploy.engine import (
    PROJECT,
    Compose,
    docker_socket,
    health_checks,
    missing_tools,
    podman,
    why_containers_cannot_run,
)

T = TypeVar("T")
DATA = PROJECT.parent / "shared" / "data"
SHORT_CLIPS = 6
WORKERS = 2
PROJECT_NAME = "whisperq-check"
MAX_WER = 0.25  # tiny.en on these clean clips scores well under this; a broken image scores 1.0
API_IMAGE = "localhost/whisperq-api:check"
WORKER_IMAGE = "localhost/whisperq-worker:check-cpu"
WORKER_ARGS = {"BASE_IMAGE": images.BASE, "EXTRAS": "worker,models"}  # the bundled models: no hub needed


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 1.0) -> T:
    """Poll until `check()` gives a value; fail with `what` if it does not within the time."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_api_key() -> tuple[str, str]:
    """A key made the way README says (`whisperq new-key`): the key, and the WHISPERQ_API_KEYS value holding it."""
    printed = subprocess.run(
        [sys.executable, "-m", "whisperq", "new-key", "deploy-check", "--admin"],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT,
    ).stdout
    key = printed.split("not stored anywhere): ")[1].split()[0]
    entry = json.loads(printed.split("add to WHISPERQ_API_KEYS: ")[1])
    return key, json.dumps([entry])


class Fleet:
    """The scaled Compose fleet and an API client on its published port."""

    def __init__(self, compose: Compose, port: int, key: str) -> None:
        self.compose = compose
        self.key = key
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def up(self) -> None:
        # --no-recreate: through podman's socket Compose would otherwise take running containers for changed ones
        self.compose("up", "--detach", "--no-build", "--no-recreate", "--scale", f"worker={WORKERS}")

    def wait_healthy(self, timeout_s: float = 600) -> None:
        services = ["redis", "api", "worker", "live"]
        wait_for("every container healthy", lambda: self.compose.healthy(services, {"worker": WORKERS}), timeout_s, 3)
        wait_for(
            f"{WORKERS} workers and a live worker announced",
            lambda: self.roles() == [*["batch"] * WORKERS, "live"],
            120,
        )

    def roles(self) -> list[str]:
        """The roles of the workers the API sees, sorted."""
        try:
            return sorted(worker["role"] for worker in self.api.get("/health").json()["workers"])
        except (httpx.HTTPError, ValueError, KeyError):
            return []

    def live_transcript(self, clip: Clip) -> str:
        """One live session through the fleet's /v1/realtime: the clip at 16 kHz, committed by hand; its final."""
        from faster_whisper import decode_audio
        from websockets.sync.client import connect

        samples = decode_audio(str(clip.audio), sampling_rate=16000)
        pcm = base64.b64encode((samples * 32767).astype("<i2").tobytes()).decode()
        url = str(self.api.base_url).replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        update = {"type": "transcription", "audio": {"input": {"format": {"rate": 16000}, "turn_detection": None}}}
        with connect(url, additional_headers={"Authorization": f"Bearer {self.key}"}) as ws:
            for event in (
                {"type": "session.update", "session": update},
                {"type": "input_audio_buffer.append", "audio": pcm},
                {"type": "input_audio_buffer.commit"},
            ):
                ws.send(json.dumps(event))
            while (event := json.loads(ws.recv(timeout=120)))[
                "type"
            ] != "conversation.item.input_audio_transcription.completed":
                assert event["type"] != "error", event
        return str(event["transcript"])

    def submit(self, clip: Clip, priority: str = "normal") -> str:
        with clip.audio.open("rb") as handle:
            answer = self.api.post("/v1/tasks", files={"file": handle}, data={"priority": priority})
        answer.raise_for_status()
        return str(answer.json()["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/v1/tasks/{task_id}")
        answer.raise_for_status()
        return dict(answer.json())

    def finished(self, task_id: str) -> dict[str, Any] | None:
        """The task once it has completed; fails at once if it failed."""
        try:
            task = self.task(task_id)
        except httpx.HTTPError:
            return None  # the API or Redis restarting
        if task["status"] in {"failed", "cancelled"}:
            raise AssertionError(f"task {task_id} {task['status']}: {task.get('error')}")
        return task if task["status"] == "completed" else None

    def wait_done(self, ids: list[str], timeout_s: float = 600) -> list[dict[str, Any]]:
        return [self.wait_one(task_id, timeout_s) for task_id in ids]

    def wait_one(self, task_id: str, timeout_s: float) -> dict[str, Any]:
        return wait_for(f"task {task_id} to complete", lambda: self.finished(task_id), timeout_s)

    def worker_container(self, worker_id: str) -> str:
        """The container a worker runs in (a worker's id starts with its host name, the container's)."""
        for row in self.compose.containers("worker"):
            hostname = podman("inspect", "--format", "{{.Config.Hostname}}", row["ID"]).strip()
            if worker_id.startswith(f"{hostname}-"):
                return row["ID"]
        raise AssertionError(f"no worker container runs {worker_id}")


def text_of(task: dict[str, Any]) -> str:
    return str(task["result"]["text"])


def check_right(clips: list[Clip], tasks: list[dict[str, Any]]) -> float:
    """The word error rate of these results against the clips' references; fails past MAX_WER."""
    wer, _ = error_rates([clip.reference for clip in clips], [text_of(task) for task in tasks])
    assert wer <= MAX_WER, f"word error rate {wer:.1%} past {MAX_WER:.0%}: {[text_of(t) for t in tasks]}"
    return wer


def pick_clips(data: Path) -> tuple[list[Clip], Clip]:
    """Short clean read speech with exact references (JFK and LJSpeech), and one long recording."""
    clips = [c for c in load_manifest(data / "manifest.tsv") if c.id == "fw_jfk" or c.id.startswith("lj_")]
    exact = [c for c in clips if c.ref_quality.startswith("exact") and 3 <= (c.duration or 0) <= 12][:SHORT_CLIPS]
    long_audio = data / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
    reference = long_audio.with_suffix(".txt").read_text()
    return exact, Clip(id="long", audio=long_audio, reference=reference, language="en")


def scenario(fleet: Fleet, data: Path) -> dict[str, float]:
    """Everything the check asserts, in order; the figures it measured."""
    figures: dict[str, float] = {}
    short, long_clip = pick_clips(data)
    started = time.monotonic()
    fleet.up()
    fleet.wait_healthy()
    figures["up_to_healthy_s"] = time.monotonic() - started
    up_s = figures["up_to_healthy_s"]
    print(f"fleet healthy: redis, api, {WORKERS} workers and a live worker, {up_s:.0f} s after up", flush=True)

    ids = [fleet.submit(clip) for clip in short]
    first = wait_for("a first completed task", lambda: any(fleet.finished(i) for i in ids), 600, 0.5)
    figures["up_to_first_completed_s"] = time.monotonic() - started
    done = fleet.wait_done(ids)
    workers = {task["worker"] for task in done}
    assert first and len(workers) == WORKERS, f"only {workers} took work"
    figures["short_wer"] = check_right(short, done)
    print(
        f"{len(done)} clips transcribed by {len(workers)} workers, WER {figures['short_wer']:.1%}; first done "
        f"{figures['up_to_first_completed_s']:.0f} s after up",
        flush=True,
    )

    started = time.monotonic()
    transcript = fleet.live_transcript(short[0])
    figures["live_wer"], _ = error_rates([short[0].reference], [transcript])
    assert figures["live_wer"] <= MAX_WER, f"live transcript {transcript!r}"
    print(
        f"a live session through the live worker: WER {figures['live_wer']:.1%}, "
        f"{time.monotonic() - started:.1f} s from connecting to the final text",
        flush=True,
    )

    figures |= kill_a_busy_worker(fleet, long_clip)
    results = {task["id"]: text_of(task) for task in done}
    results |= restart_redis(fleet, [long_clip, long_clip, *short[:2]])
    down_and_up(fleet, results)
    return figures


def kill_a_busy_worker(fleet: Fleet, long_clip: Clip) -> dict[str, float]:
    """SIGKILL the container running a long task: another worker finishes it, right."""
    task_id = fleet.submit(long_clip, priority="high")
    running = wait_for("the long task to run", lambda: (t := fleet.task(task_id))["status"] == "processing" and t, 300)
    victim = fleet.worker_container(running["worker"])
    killed_at = time.monotonic()
    podman("kill", "--signal", "KILL", victim)
    [task] = fleet.wait_done([task_id], 900)
    seconds = time.monotonic() - killed_at
    assert task["worker"] != running["worker"] and task["attempts"] >= 2, task
    wer = check_right([long_clip], [task])
    print(
        f"killed the worker running the long task; it was taken up again and completed {seconds:.0f} s later "
        f"(attempt {task['attempts']}), WER {wer:.1%}",
        flush=True,
    )
    fleet.up()  # a container killed by hand stays down (the restart policy leaves it): scale back as an operator would
    fleet.wait_healthy()
    return {"kill_to_completed_s": seconds, "long_wer": wer}


def restart_redis(fleet: Fleet, clips: list[Clip]) -> dict[str, str]:
    """Restart Redis while tasks run and wait: they all complete, right."""
    ids = [fleet.submit(clip) for clip in clips]
    wait_for("every worker busy", lambda: sum(fleet.task(i)["status"] == "processing" for i in ids) == WORKERS, 300)
    statuses = [fleet.task(i)["status"] for i in ids]
    fleet.compose("restart", "redis")
    done = fleet.wait_done(ids, 900)
    wer = check_right(clips, done)
    print(f"restarted Redis with tasks {', '.join(statuses)}: all completed, WER {wer:.1%}", flush=True)
    return {task["id"]: text_of(task) for task in done}


def down_and_up(fleet: Fleet, results: dict[str, str]) -> None:
    """`down` then `up`: every finished task and its result is found again."""
    stopped = time.monotonic()
    fleet.compose("down", timeout_s=1800)
    print(f"fleet down in {time.monotonic() - stopped:.0f} s", flush=True)
    fleet.up()
    fleet.wait_healthy()
    for task_id, text in results.items():
        task = fleet.task(task_id)
        assert task["status"] == "completed" and text_of(task) == text, f"{task_id} after down and up: {task}"
    print(f"down and up again: all {len(results)} finished tasks and their results found", flush=True)


def build_images(folder: Path, mirror: str, reuse: bool) -> list[images.Built]:
    """The base, Redis, API and CPU worker images (those already there kept, with `reuse`)."""
    steps: list[tuple[str, Callable[[], images.Built]]] = [
        (images.BASE, lambda: images.build_base(folder, mirror)),
        (images.REDIS, lambda: images.build_redis(folder)),
        (API_IMAGE, lambda: images.build(API_IMAGE, PROJECT / "Dockerfile.api", {"BASE_IMAGE": images.BASE})),
        (WORKER_IMAGE, lambda: images.build(WORKER_IMAGE, PROJECT / "Dockerfile.worker", WORKER_ARGS)),
    ]
    built = []
    for name, step in steps:
        image = images.Built(name, 0.0, images.size_mb(name)) if reuse and images.exists(name) else step()
        print(f"image {image.name}: {image.size_mb:.0f} MB, built in {image.seconds:.0f} s", flush=True)
        built.append(image)
    return built


def run(folder: Path, data: Path, mirror: str, reuse: bool) -> None:
    built = build_images(folder, mirror, reuse)
    key, keys_setting = new_api_key()
    port = free_port()
    env = {"WHISPERQ_PORT": str(port), "WHISPERQ_API_KEYS": keys_setting}
    with docker_socket(folder) as socket_path, health_checks(PROJECT_NAME):
        compose = Compose(socket_path, PROJECT_NAME, env)
        try:
            figures = scenario(Fleet(compose, port, key), data)
        except BaseException:
            print(compose("logs", "--no-color", "--tail", "60")[-20000:], file=sys.stderr)
            raise
        finally:
            compose("down", "--volumes", "--remove-orphans", "--timeout", "20")  # not the workers' 30-minute grace
    sizes = ", ".join(f"{image.name} {image.size_mb:.0f} MB" for image in built)
    print(
        f"deployment check passed: {sizes}; build {sum(i.seconds for i in built):.0f} s in all; "
        + ", ".join(f"{name} {value:.3g}" for name, value in figures.items()),
        flush=True,
    )


def stop_once(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: unwind, cleaning up on the way, and take no more signals meanwhile (a second would cut it short)."""
    signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"stopping on signal {signum}: cleaning up", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m deploy.check", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the speech data (manifest.tsv and long/)")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for the base")
    parser.add_argument("--reuse-images", action="store_true", help="keep and reuse images an earlier run left")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop_once)
    reason = why_containers_cannot_run()
    if reason:
        print(f"deployment check skipped: {reason}")
        return 0
    if missing := missing_tools():
        print(f"deployment check cannot run: {', '.join(missing)} not installed (.ci/run installs them)")
        return 1
    before = images.image_ids()
    with tempfile.TemporaryDirectory(prefix="whisperq-deploy-") as folder:
        try:
            run(Path(folder), args.data, args.mirror, args.reuse_images)
        finally:
            if not args.reuse_images:
                images.remove_images(images.image_ids() - before)
    return 0


if __name__ == "__main__":
    sys.exit(main())

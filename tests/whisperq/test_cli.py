"""`whisperq up`: one command runs an embedded Redis, the API and a worker, keeps them up, stops them cleanly."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import JFK, Output, submit, wait_for
from tests.live.conftest import append_event, connect, pcm16, receive_until
from whisperq.redis_server import free_port
from whisperq.stack import HEALTHY_AFTER_S, Child

pytestmark = pytest.mark.slow


class Up:
    """A `whisperq up` child of the test and the output it prints."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        assert process.stdout is not None
        self.output = Output(process.stdout)

    def pid_of(self, name: str) -> int:
        """The pid `up` printed for a piece it started (the latest, if it was restarted)."""
        pids = [int(m.group(1)) for line in self.output.lines if (m := re.search(rf"\b{name} \(pid (\d+)\)", line))]
        assert pids, f"no pid printed for {name}:\n{self.output.text}"
        return pids[-1]

    def pids(self) -> set[int]:
        """Every pid `up` printed for the pieces it started."""
        return {int(pid) for pid in re.findall(r"\(pid (\d+)\)", self.output.text)}

    def stop(self, timeout_s: float = 120) -> int:
        """SIGINT, as Ctrl-C sends, and wait until `up` has stopped everything; its exit status."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=timeout_s)


def gone(pid: int) -> bool:
    """Whether a process has ended (a zombie that nobody has reaped yet counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if not stat.parent.parent.is_dir():
        return False
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def start_up(tmp_path: Path, model_cache: Path) -> Iterator[Callable[..., Up]]:
    """Start `whisperq up --model tiny.en` in tmp_path; whatever it left running is killed at the end."""
    started: list[Up] = []
    env = {key: value for key, value in os.environ.items() if not key.startswith("WHISPERQ_")}
    env.update(
        WHISPERQ_DATA_DIR=str(tmp_path / "data"),
        WHISPERQ_MODEL_CACHE_DIR=str(model_cache),
        WHISPERQ_ALLOW_DOWNLOAD="false",
        PYTHONUNBUFFERED="1",
    )

    def start(*args: str, sigint_ignored: bool = False) -> Up:
        port = free_port()
        command = [sys.executable, "-m", "whisperq", "up", "--port", str(port), "--model", "tiny.en", *args]
        if sigint_ignored:  # as a shell starts a background job (`whisperq up &`) when job control is off
            command = ["sh", "-c", f"trap '' INT; exec {shlex.join(command)}"]
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(Up(process, port))
        return started[-1]

    yield start
    for up in started:
        up.process.kill()
        up.process.wait()
        for pid in up.pids():
            kill_if_alive(pid)
        assert up.process.stdout is not None
        up.process.stdout.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def completed(client: httpx.Client, task_id: str) -> dict[str, Any]:
    """Wait until the task has ended; it must have completed."""
    task: dict[str, Any] = wait_for(
        lambda: (t := client.get(f"/v1/tasks/{task_id}").json())["status"] in ("completed", "failed") and t,
        timeout_s=120,
    )
    assert task["status"] == "completed", task
    return task


def test_up_serves_transcribes_and_stops_cleanly_even_started_in_the_background(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    up = start_up(sigint_ignored=True)
    ready = up.output.wait_for("whisperq is up.*")
    assert "embedded redis-server" in up.output.text
    assert f"http://127.0.0.1:{up.port}/docs" in ready.group(0), "the line that says it is up gives the docs"
    with httpx.Client(base_url=up.url, timeout=30) as client:
        assert client.get("/docs").status_code == 200
        task_id = submit(client, JFK).json()["id"]
        completed(client, task_id)
        srt = client.get(f"/v1/tasks/{task_id}/result", params={"format": "srt"}).text
        assert srt.startswith("1\n00:00:00,000 --> ") and "ask not what your country" in srt
    assert "ask not what your country" in live_transcript(up.url, JFK).lower(), "up starts a live worker too"

    assert up.stop() == 0, up.output.text
    up.output.wait_for("stopping")
    assert not port_open(up.port), "the API is stopped"
    assert all(gone(pid) for pid in up.pids()), "every piece is stopped"
    assert (tmp_path / "data" / "redis" / "appendonly.aof").exists(), "the embedded Redis persists with AOF"


def live_transcript(url: str, media: Path) -> str:
    """One live session: the clip sent whole at 16 kHz, committed by hand; its final text."""
    with connect(url.replace("http://", "ws://") + "/v1/realtime?intent=transcription") as ws:
        update = {"type": "transcription", "audio": {"input": {"format": {"rate": 16000}, "turn_detection": None}}}
        ws.send(json.dumps({"type": "session.update", "session": update}))
        ws.send(append_event(pcm16(media, 16000)))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = receive_until(ws, "conversation.item.input_audio_transcription.completed", timeout_s=120)
    return str(events[-1]["transcript"])


def batch_worker_pids(client: httpx.Client) -> set[int]:
    """The pids of the running workers that take queued tasks, asking an API that must answer."""
    health = client.get("/health")
    assert health.status_code == 200, health.text
    return {worker["pid"] for worker in health.json()["workers"] if worker["role"] == "batch"}


def answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def test_up_restarts_a_piece_that_dies_and_stops_only_when_asked(start_up: Callable[..., Up]) -> None:
    up = start_up()
    up.output.wait_for("whisperq is up")
    with httpx.Client(base_url=up.url, timeout=30) as client:
        (first,) = batch_worker_pids(client)
        os.kill(first, signal.SIGKILL)  # as the OOM killer does
        # The API answers all along, until a new worker serves the model.
        wait_for(lambda: batch_worker_pids(client) - {first}, timeout_s=180, every_s=0.2)
        up.output.wait_for(rf"worker 1 \(pid {first}\) was killed by SIGKILL; restarting")
        completed(client, submit(client, JFK).json()["id"])

        api = up.pid_of("api")
        os.kill(api, signal.SIGKILL)
        up.output.wait_for(rf"api \(pid {api}\) was killed by SIGKILL; restarting")
        wait_for(lambda: answers(client), timeout_s=120, every_s=0.2)
        assert up.pid_of("api") != api

        redis = up.pid_of("redis-server")
        done = completed(client, submit(client, JFK).json()["id"])
        os.kill(redis, signal.SIGKILL)
        up.output.wait_for(rf"redis-server \(pid {redis}\) was killed by SIGKILL; restarting")
        wait_for(lambda: answers(client), timeout_s=120, every_s=0.2)
        assert client.get(f"/v1/tasks/{done['id']}").json() == done, "the same data, from its AOF"
        completed(client, submit(client, JFK).json()["id"])
    assert up.process.poll() is None, "up stops only when asked"
    assert up.stop() == 0, up.output.text


def test_the_pieces_stop_when_up_is_killed(start_up: Callable[..., Up]) -> None:
    up = start_up("--workers", "2")
    up.output.wait_for("whisperq is up")
    pieces = {name: up.pid_of(name) for name in ("redis-server", "api", "worker 1", "worker 2")}
    up.process.kill()
    up.process.wait()
    wait_for(lambda: all(gone(pid) for pid in pieces.values()), timeout_s=120, every_s=0.2)


def planned_delay(capsys: pytest.CaptureFixture[str]) -> float:
    """The delay of the restart `up` just announced."""
    return float(capsys.readouterr().out.split("restarting it in ")[1].split()[0])


def test_a_piece_that_keeps_dying_waits_longer_each_time(capsys: pytest.CaptureFixture[str]) -> None:
    child = Child("crasher", lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
    now, delays = time.monotonic(), []
    for _ in range(4):
        child.process.wait()
        child.tend(now)  # its death is seen now: a restart is planned
        delays.append(planned_delay(capsys))
        child.tend(now + delays[-1] - 0.01)
        assert "restarted" not in capsys.readouterr().out, "not before its time"
        now += delays[-1]
        child.tend(now)
        assert f"restarted crasher (pid {child.process.pid})" in capsys.readouterr().out
    assert delays == [1, 2, 4, 8]

    child.process.wait()
    child.tend(now + HEALTHY_AFTER_S)  # it had run for a minute: healthy, so it starts again soon
    assert planned_delay(capsys) == 1

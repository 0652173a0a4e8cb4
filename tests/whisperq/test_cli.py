"""`whisperq up`: the one command that runs an embedded Redis, the API and a worker, then stops them cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK
from whisperq.redis_server import free_port

pytestmark = pytest.mark.slow


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed; got:\n{''.join(lines)}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_serves_transcribes_and_stops_cleanly(tmp_path: Path, model_cache: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("WHISPERQ_")}
    env.update(
        WHISPERQ_DATA_DIR=str(tmp_path / "data"),
        WHISPERQ_MODEL_CACHE_DIR=str(model_cache),
        WHISPERQ_ALLOW_DOWNLOAD="false",
        PYTHONUNBUFFERED="1",
    )
    command = [sys.executable, "-m", "whisperq", "up", "--port", str(port), "--model", "tiny.en"]
    up = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = wait_for_line(up, "whisperq is up", timeout_s=120)
        assert any("embedded redis-server" in line for line in lines)
        assert f"http://127.0.0.1:{port}/docs" in lines[-1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            assert client.get("/docs").status_code == 200
            with JFK.open("rb") as handle:
                task_id = client.post("/v1/tasks", files={"file": handle}).json()["id"]
            deadline = time.monotonic() + 120
            while (status := client.get(f"/v1/tasks/{task_id}").json()["status"]) not in ("completed", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert status == "completed"
            srt = client.get(f"/v1/tasks/{task_id}/result", params={"format": "srt"}).text
            assert srt.startswith("1\n00:00:00,000 --> ") and "ask not what your country" in srt
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=90)
    assert up.returncode == 0, output
    assert "stopping" in output
    assert not port_open(port), "the API is stopped"
    assert (tmp_path / "data" / "redis" / "appendonly.aof").exists(), "the embedded Redis persists with AOF"

"""`whisperq healthcheck api|worker`, the command the images and the Compose file use as their health checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import PROJECT
from whisperq.redis_server import free_port


def healthcheck(piece: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("WHISPERQ_")}
    return subprocess.run(
        [sys.executable, "-m", "whisperq", "healthcheck", piece],
        env=dict(clean, **env),
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_is_healthy_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    beat = tmp_path / "alive"
    assert "no heartbeat yet" in healthcheck("worker", WHISPERQ_HEARTBEAT_FILE=str(beat)).stderr
    beat.touch()
    assert healthcheck("worker", WHISPERQ_HEARTBEAT_FILE=str(beat)).returncode == 0
    os.utime(beat, (time.time() - 61, time.time() - 61))
    stale = healthcheck("worker", WHISPERQ_HEARTBEAT_FILE=str(beat))
    assert stale.returncode == 1 and "last heartbeat" in stale.stderr
    unset = healthcheck("worker")
    assert unset.returncode == 1 and "WHISPERQ_HEARTBEAT_FILE is not set" in unset.stderr


def test_the_api_is_healthy_while_its_health_answers_200(api: httpx.Client) -> None:
    assert healthcheck("api", WHISPERQ_API_PORT=str(api.base_url.port)).returncode == 0
    down = healthcheck("api", WHISPERQ_API_PORT=str(free_port()))
    assert down.returncode == 1 and "refused" in down.stderr

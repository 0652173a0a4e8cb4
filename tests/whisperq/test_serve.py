"""`whisperq api` on the fast server stack: uvloop and httptools, which the `api` extra installs."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from shared.settings import Settings
from tests.conftest import Spawned, wait_for, worker_env
from whisperq.redis_server import free_port
from whisperq.serve import server_stack


@pytest.fixture
def start_api(settings: Settings) -> Iterator[Callable[..., tuple[Spawned, int]]]:
    started: list[Spawned] = []

    def start(**overrides: Any) -> tuple[Spawned, int]:
        port = free_port()
        env = worker_env(settings.model_copy(update=overrides))
        started.append(Spawned([sys.executable, "-m", "whisperq", "api", "--port", str(port)], env))
        return started[-1], port

    yield start
    for process in started:
        process.stop()


def test_the_api_extra_brings_the_fast_stack() -> None:
    assert server_stack() == ("uvloop", "httptools")


@pytest.mark.parametrize("processes", [1, 2])
def test_whisperq_api_serves_on_it_in_the_processes_set(
    start_api: Callable[..., tuple[Spawned, int]], processes: int
) -> None:
    process, port = start_api(api_processes=processes)
    process.log.wait_for(rf"API on 127\.0\.0\.1:{port}, on uvloop and httptools, in {processes} process")
    assert wait_for(lambda: _status(f"http://127.0.0.1:{port}/health"), timeout_s=30) == 200
    started = wait_for(lambda: _pids(process) if len(_pids(process)) == processes else None, timeout_s=30)
    assert len(started) == processes


def _pids(process: Spawned) -> set[str]:
    """The processes uvicorn says serve the app."""
    return set(re.findall(r"Started server process \[(\d+)\]", process.log.text))


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return None

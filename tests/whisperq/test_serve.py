"""`whisperq api` on the fast server stack: uvloop and httptools, which the `api` extra installs."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from shared.settings import Settings
from tests.conftest import Spawned, wait_for, worker_env
from whisperq.redis_server import free_port
from whisperq.serve import server_stack


@pytest.fixture
def api_process(settings: Settings) -> Iterator[tuple[Spawned, int]]:
    port = free_port()
    process = Spawned([sys.executable, "-m", "whisperq", "api", "--port", str(port)], worker_env(settings))
    yield process, port
    process.stop()


def test_the_api_extra_brings_the_fast_stack() -> None:
    assert server_stack() == ("uvloop", "httptools")


def test_whisperq_api_serves_on_it(api_process: tuple[Spawned, int]) -> None:
    process, port = api_process
    process.log.wait_for(rf"API on 127\.0\.0\.1:{port}, on uvloop and httptools")
    assert wait_for(lambda: _status(f"http://127.0.0.1:{port}/health"), timeout_s=30) == 200


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return None

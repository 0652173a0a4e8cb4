"""The local stack: Redis (embedded unless one is configured), the API and N workers, as child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import IO

import httpx

from shared.settings import Settings
from whisperq.redis_server import RedisServer

READY_TIMEOUT_S = 600.0


class Stack:
    """Redis (embedded unless WHISPERQ_REDIS_URL is set), the API and N workers, as child processes."""

    def __init__(self, settings: Settings, workers: int, log: IO[bytes] | None = None) -> None:
        self.settings = settings
        self.workers = workers
        self.log = log
        self.redis: RedisServer | None = None
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start Redis (unless one is configured), the API and the workers, all with these settings."""
        env = dict(os.environ, **self.settings.as_env())
        if self.settings.redis_url is None:
            self.redis = RedisServer(self.settings.data_dir / "redis")
            self.redis.start()
            print(f"embedded redis-server at {self.redis.url}, data in {self.redis.data_dir}", flush=True)
            env["WHISPERQ_REDIS_URL"] = self.redis.url
        self.children.append(self._spawn([sys.executable, "-m", "whisperq", "api"], env))
        for _ in range(self.workers):
            self.children.append(self._spawn([sys.executable, "-m", "whisperq", "worker"], env))

    def _spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # A session of its own, so Ctrl-C reaches `up` alone and it stops the pieces in order.
        return subprocess.Popen(command, env=env, start_new_session=True, stdout=self.log, stderr=self.log)

    def wait_ready(self, base_url: str) -> None:
        """Wait until the API answers and a worker serves the model."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if self.settings.served_model in httpx.get(f"{base_url}/health", timeout=2).json().get("models", []):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError("the API or the worker did not become ready in time")

    def check_alive(self) -> None:
        """Raise if a child has exited."""
        for child in self.children:
            if child.poll() is not None:
                raise RuntimeError(f"{child.args!r} exited with status {child.returncode}")

    def stop(self) -> None:
        """Workers first (they finish their job), then the API, then Redis."""
        # A second Ctrl-C must not cut the stop short.
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in reversed(self.children):
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in reversed(self.children):
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
            if self.redis is not None:
                self.redis.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

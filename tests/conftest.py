"""Real parts for the tests: a redis-server for the session, the API on loopback, worker processes."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import uvicorn
from redis import Redis

from api.main import create_app
from shared import fleet, queues
from shared.clock import utcnow
from shared.enums import Priority, TaskStatus, TaskType
from shared.schemas import Segment, Source, Task, TranscribeOptions, Word, WorkerInfo
from shared.settings import Settings
from shared.stores import Stores
from whisperq.redis_server import RedisServer, free_port

PROJECT = Path(__file__).resolve().parent.parent
DATA = PROJECT.parent / "shared" / "data"
JFK = DATA / "audio" / "faster_whisper" / "jfk.flac"


def manifest() -> dict[str, dict[str, str]]:
    """The shared data's manifest rows by clip id."""
    with (DATA / "manifest.tsv").open(newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle, delimiter="\t")}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the session, so the base model is joined once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def settings(redis_server: RedisServer, redis: Redis, tmp_path: Path, model_cache: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_server.url,
        data_dir=tmp_path / "data",
        model_cache_dir=model_cache,
        default_model="tiny.en",
        allow_download=False,
        allowed_hosts=["127.0.0.1"],  # the tests' own media servers and callback receivers
    )


class ApiServer:
    """The API app served by uvicorn on a loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def api_factory(settings: Settings) -> Iterator[Callable[..., httpx.Client]]:
    """Start the API with settings overridden by keyword; yields an httpx client for it."""
    servers: list[ApiServer] = []
    clients: list[httpx.Client] = []

    def start(**overrides: Any) -> httpx.Client:
        server = ApiServer(settings.model_copy(update=overrides)).__enter__()
        servers.append(server)
        clients.append(httpx.Client(base_url=server.url, timeout=30))
        return clients[-1]

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.__exit__()


@pytest.fixture
def api(api_factory: Callable[..., httpx.Client]) -> httpx.Client:
    return api_factory()


@pytest.fixture
def served(redis: Redis) -> Callable[[str], None]:
    """Announce a model as served before any worker runs (a burst worker runs later and announces itself)."""

    def announce(model: str) -> None:
        info = WorkerInfo(
            id=f"announced-{model}",
            model=model,
            device="cpu",
            compute_type="int8",
            multilingual=not model.endswith(".en"),  # as the bundled models' own flags say
            host="test",
            pid=os.getpid(),
            started_at=utcnow(),
        )
        fleet.announce(redis, info, ttl_s=300)

    return announce


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment a worker process gets for these settings."""
    return dict(os.environ, **settings.as_env())


@pytest.fixture
def run_worker(settings: Settings) -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Run a real worker process in burst mode: it works through its queues, then exits."""

    def run(model: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "worker", "--burst", "--model", model]
        done = subprocess.run(
            command, env=worker_env(settings), cwd=PROJECT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    return run


class Spawned(subprocess.Popen[str]):
    """A child process whose stderr is read as it prints, so that a chatty one never blocks on a full pipe.

    It leads a session of its own, so that stopping it also stops what it started (uvicorn's API processes).
    """

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        pipes: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        super().__init__(command, env=env, cwd=PROJECT, text=True, start_new_session=True, **pipes)
        assert self.stderr is not None
        self.log = Output(self.stderr)

    def finish(self, timeout_s: float = 120) -> str:
        """Wait for the process to end; everything it printed on stderr."""
        try:
            self.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout_s} s; it printed:\n{self.log.text[-6000:]}") from None
        return self.log.wait_ended(timeout_s)

    def stop(self) -> None:
        """Kill it and everything it started, and give its reader a moment to reach the end of what it printed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait()
        self.log.ended_within(10)  # a child of its own may still hold the pipe open; its reader closes it then


StartWorker = Callable[..., Spawned]


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[StartWorker]:
    """Start real worker processes beside the test (burst mode by default); killed at the end if still running."""
    started: list[Spawned] = []

    def start(model: str = "tiny.en", burst: bool = True, **overrides: Any) -> Spawned:
        command = [sys.executable, "-m", "worker", "--model", model, *(["--burst"] if burst else [])]
        started.append(Spawned(command, worker_env(settings.model_copy(update=overrides))))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def wait_for(check: Callable[[], Any], timeout_s: float = 60, every_s: float = 0.05) -> Any:
    """Poll until `check()` is truthy; its value."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every_s)
    return value


class Output:
    """What a process prints, read line by line by a thread, so that a test can wait for a line with a time limit."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        try:
            with stream:
                for line in stream:
                    with self._changed:
                        self.lines.append(line)
                        self._changed.notify_all()
        except (OSError, ValueError):  # the stream was closed under the reader
            pass
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 120) -> re.Match[str]:
        """The first line that matches the regular expression, once it is printed."""
        with self._changed:
            printed = self._changed.wait_for(lambda: self._search(pattern) or self.ended, timeout_s)
            match = self._search(pattern)
            assert match, f"{pattern!r} not printed ({'it ended' if printed else 'timed out'}); got:\n{self.text}"
            return match

    def ended_within(self, timeout_s: float) -> bool:
        """Whether the stream ends within the time given."""
        with self._changed:
            return self._changed.wait_for(lambda: self.ended, timeout_s)

    def wait_ended(self, timeout_s: float = 120) -> str:
        """Everything printed, once the stream has ended."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.ended, timeout_s), f"still printing:\n{self.text}"
            return self.text

    def _search(self, pattern: str) -> re.Match[str] | None:
        return next(filter(None, (re.search(pattern, line) for line in self.lines)), None)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def make_segment(index: int, start: float, end: float, text: str, words: bool = False) -> Segment:
    """A decoded segment as the engine would give it, with one word spanning it if `words`."""
    return Segment(
        id=index,
        seek=0,
        start=start,
        end=end,
        text=text,
        tokens=[1, 2],
        temperature=0.0,
        avg_logprob=-0.2,
        compression_ratio=1.1,
        no_speech_prob=0.01,
        words=[Word(start=start, end=end, word=text, probability=0.9)] if words else None,
    )


def submit(api: httpx.Client, path: Path, headers: dict[str, str] | None = None, **fields: Any) -> httpx.Response:
    """POST a media file with form fields to /v1/tasks."""
    with path.open("rb") as handle:
        data = {k: str(v) for k, v in fields.items()}
        return api.post("/v1/tasks", files={"file": (path.name, handle)}, data=data, headers=headers)


def queued_task(
    redis: Redis, stores: Stores, model: str = "tiny.en", media: Path = JFK, enqueue: bool = True, **fields: Any
) -> Task:
    """A queued task holding an upload of the media (the JFK clip), its job waiting on its queue unless told not."""
    upload = stores.storage.receive(max_bytes=1 << 30)
    upload.write(media.read_bytes())
    upload.commit()
    task = Task(
        id=uuid.uuid4().hex,
        status=TaskStatus.QUEUED,
        task_type=TaskType.TRANSCRIBE,
        priority=fields.pop("priority", Priority.NORMAL),
        model=model,
        options=fields.pop("options", TranscribeOptions()),
        source=Source(),
        created_at=utcnow(),
        upload_name=upload.name,
        **fields,
    )
    pipe = redis.pipeline()
    pipe.multi()
    stores.tasks.create(task, pipe)
    if enqueue:
        queues.enqueue(redis, task, pipe, ttl_s=60)
    pipe.execute()
    return task

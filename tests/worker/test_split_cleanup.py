"""A split that fails before its task records the chunks leaves no chunk audio on the volume, however it fails."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.connection import connect
from shared.lifecycle import Lifecycle
from shared.settings import Settings
from shared.stores import Stores
from tests.conftest import DATA, queued_task, submit
from whisperq.redis_server import RedisServer
from worker import context, engine, jobs

StartWorker = Callable[..., subprocess.Popen[str]]
LJSPEECH = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
SPLIT = {"split_after_s": 60.0, "chunk_target_s": 30.0}


def chunk_audio(settings: Settings) -> list[Path]:
    return sorted(settings.uploads.rglob("*.wav"))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_split_that_fails_while_redis_is_away_leaves_no_chunk_audio(
    own_redis: RedisServer, settings: Settings, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    settings = settings.model_copy(update={"redis_url": own_redis.url, **SPLIT})
    redis = connect(own_redis.url, patient=False)  # fails at once while Redis is away, instead of for a minute
    request.addfinalizer(redis.close)
    stores = Stores.open(redis, settings)
    task = queued_task(redis, stores, media=LJSPEECH)
    tiny = engine.load_engine(settings.model_copy(update={"model": "tiny.en"}))
    ctx = context.WorkerContext("splitter", redis, settings, tiny, stores, Lifecycle(redis, stores, False))
    monkeypatch.setattr(context, "_current", ctx)

    def detection_fails(*args: Any) -> tuple[str, float]:
        assert chunk_audio(settings), "the chunks are written before the language is detected"
        own_redis.stop()  # nothing can be recorded about the failure
        raise RuntimeError("language detection failed")

    monkeypatch.setattr(engine, "detect_language", detection_fails)
    with pytest.raises(Exception):  # noqa: B017 -- the failure, or the Redis error recording it
        jobs.transcribe(task.id)
    assert chunk_audio(settings) == []
    assert [path.name for path in settings.uploads.iterdir() if path.is_file()] == [task.upload_name], "the media stays"


@pytest.mark.slow
def test_a_split_past_its_deadline_leaves_no_chunk_audio(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: StartWorker,
    settings: Settings,
) -> None:
    served("tiny.en")
    api = api_factory(**SPLIT)
    task_id = submit(api, LJSPEECH).json()["id"]
    # 0.3 s in all for a 222-s file: the deadline passes while the audio is being cut.
    assert start_worker(job_timeout_base_s=0.3, job_timeout_factor=0.0001, **SPLIT).wait(timeout=120) == 0
    failed = api.get(f"/v1/tasks/{task_id}").json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    assert list(settings.uploads.iterdir()) == [], "neither the media nor any chunk audio is left"

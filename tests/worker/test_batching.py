"""Batches of windows: what may share one, in what order they are taken, and nothing lost when a worker dies."""

from __future__ import annotations

import re
import signal
import wave
from collections.abc import Callable
from typing import Any

import httpx
import jiwer
import numpy as np
import pytest
from redis import Redis

from benchmark.scoring import normalise
from shared import fleet, queues
from shared.enums import Priority, TaskStatus, TaskType
from shared.lifecycle import Lifecycle
from shared.schemas import Chunk, Task, TranscribeOptions
from shared.settings import Settings
from shared.store import run_fence
from shared.stores import Stores
from tests.conftest import DATA, JFK, StartWorker, manifest, queued_task, submit, wait_for
from tests.worker.test_long import finished
from worker import batching, chunk_jobs, splitting, windows
from worker.chunk_runs import take
from worker.context import WorkerContext

# A 73-s recording cut into chunks of at most 10 s: eight windows, decoded three or four at a time.
DEMO = DATA / "audio" / "asterisk" / "en" / "demo-instruct.opus"
BATCHED = {"split_after_s": 20.0, "chunk_target_s": 10.0, "batch_windows": 3}
BATCH_LINE = re.compile(r"decoding a batch of (\d+) windows: (.*)")


@pytest.fixture(scope="module")
def engine() -> windows.engines.Engine:
    from worker.engine import load_engine

    return load_engine(Settings(model="tiny.en"))


def window(samples: np.ndarray, **options: object) -> windows.Window:
    return windows.Window(samples, TaskType.TRANSCRIBE, "en", TranscribeOptions(language="en", **options))


def batches(log: str) -> list[list[str]]:
    """The chunk jobs of each batch a worker decoded, from its log."""
    return [match.group(2).split() for match in BATCH_LINE.finditer(log)]


def test_windows_decoded_together_read_as_each_alone(engine: windows.engines.Engine) -> None:
    clips = [splitting.decode(JFK, 60), splitting.decode(DEMO, 600)[: 25 * splitting.SAMPLE_RATE]]
    together = windows.decode(engine, [window(samples) for samples in clips])
    alone = [windows.decode(engine, [window(samples)])[0] for samples in clips]
    assert [[s.text for s in segments] for segments in together] == [[s.text for s in segments] for segments in alone]
    reference = normalise(
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
        "en",
    )
    assert jiwer.wer(reference, normalise(" ".join(s.text for s in together[0]), "en")) < 0.1


def test_only_windows_of_one_task_type_language_and_options_share_a_batch(engine: windows.engines.Engine) -> None:
    samples = splitting.decode(JFK, 60)
    for other in (window(samples, beam_size=1), window(samples, word_timestamps=True)):
        with pytest.raises(ValueError, match="cannot share a batch"):
            windows.decode(engine, [window(samples), other])
    translated = windows.Window(samples, TaskType.TRANSLATE, "en", TranscribeOptions(language="en"))
    assert windows.batch_key(translated) != windows.batch_key(window(samples))
    assert windows.batch_key(window(samples, temperature=[0.0])) != windows.batch_key(window(samples))


@pytest.mark.slow
def test_a_worker_batches_waiting_chunks_in_queue_order_and_only_compatible_ones(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], start_worker: StartWorker
) -> None:
    served("tiny.en")
    # Four windows at a time, four chunks of each task queued at once: the ninth window of the two plain tasks
    # share a batch, the greedy task's never join theirs, and the low task's wait for all of them.
    wide = {**BATCHED, "batch_windows": 4}
    api = api_factory(**wide)
    plain = [submit(api, DEMO, language="en").json()["id"] for _ in range(2)]
    greedy = submit(api, DEMO, language="en", beam_size="1").json()["id"]
    low = submit(api, DEMO, language="en", priority="low").json()["id"]
    worker = start_worker(burst=True, **wide)
    log = worker.finish(timeout_s=900)
    for task_id in [*plain, greedy, low]:
        assert finished(api, task_id)["status"] == "completed"
    taken = batches(log)
    assert max(len(batch) for batch in taken) == 4, "the worker fills its batches"
    options_of = {plain[0]: "plain", plain[1]: "plain", greedy: "greedy", low: "low"}
    for batch in taken:
        kinds = {options_of[job.split("-")[0]] for job in batch}
        assert len(kinds) == 1, f"a batch mixes tasks that cannot share one: {batch}"
    assert any(len({job.split("-")[0] for job in batch}) > 1 for batch in taken), "windows of two tasks share one"
    first_low = next(i for i, batch in enumerate(taken) if batch[0].startswith(low))
    assert all(not batch[0].startswith(low) for batch in taken[:first_low])
    assert all(job.split("-")[0] == low for batch in taken[first_low:] for job in batch), "low waits for the rest"


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: StartWorker,
    redis: Redis,
    settings: Settings,
) -> None:
    served("tiny.en")
    api = api_factory(**BATCHED)
    task_id = submit(api, DEMO, language="en").json()["id"]
    doomed = start_worker(burst=False, worker_ttl_s=5, **BATCHED)

    def batch_in_hand() -> bool:
        held = fleet.holdings(redis, [w.id for w in fleet.live_workers(redis)])
        return any(len(jobs) > 1 for jobs in held.values())

    wait_for(batch_in_hand, timeout_s=300, every_s=0.02)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    start_worker(burst=False, worker_ttl_s=5, **BATCHED)
    done = finished(api, task_id, timeout_s=600)
    assert done["status"] == "completed", done["error"]
    assert done["chunks_done"] == done["chunks"]
    reference = normalise(manifest()["ast_en_demo-instruct"]["reference"], "en")
    assert jiwer.wer(reference, normalise(done["result"]["text"], "en")) < 0.25, "every window's words are there"
    assert list(settings.uploads.iterdir()) == []


def split_task(redis: Redis, stores: Stores, chunks: int, **fields: Any) -> Task:
    """A task split into `chunks` chunks of the JFK clip by a run of its own, every chunk's job queued."""
    task = queued_task(redis, stores, enqueue=False, **fields)
    run = stores.tasks.start(task, "splitter", TaskStatus.PROCESSING)
    stores.tasks.update(task.id, [run_fence(task.id, run)], language="en")
    plan = [Chunk(index=i, start=11.0 * i, end=11.0 * (i + 1)) for i in range(chunks)]
    samples = (splitting.decode(JFK, 60) * 32767).astype("<i2")
    for chunk in plan:
        path = stores.storage.chunk_path(task.id, chunk.index, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1), out.setsampwidth(2), out.setframerate(splitting.SAMPLE_RATE)
            out.writeframes(samples.tobytes())
    assert stores.chunks.create(task.id, plan, "en", 1.0, run)
    assert stores.chunks.close(task.id, run, plan[-1].end) is False
    task = task.model_copy(update={"run": run, "language": "en"})
    queues.enqueue_chunks(redis, task, stores.chunks.take(task.id, chunks), 600)
    return task


def test_a_batch_takes_compatible_chunks_in_queue_order_and_drops_a_cancelled_task(
    redis: Redis, settings: Settings, engine: windows.engines.Engine
) -> None:
    wide = settings.model_copy(update={"batch_windows": 4})
    stores = Stores.open(redis, wide)
    first = split_task(redis, stores, 2)
    greedy = split_task(redis, stores, 2, options=TranscribeOptions(beam_size=1))
    second = split_task(redis, stores, 3)
    low = split_task(redis, stores, 2, priority=Priority.LOW)
    ctx = WorkerContext("worker-1", redis, wide, engine, stores, Lifecycle(redis, stores, False))
    queue = queues.task_queue(redis, first).key
    assert redis.lpop(queue) == f"{first.id}-0".encode()  # as RQ hands the first job to the worker
    head = take(ctx, first.id, 0)
    assert head is not None
    taken = [f"{run.task.id}-{run.index}" for run in batching.more(ctx, head)]
    assert taken == [f"{first.id}-1", f"{second.id}-0", f"{second.id}-1"], "compatible, in queue order, to the width"
    waiting = {raw.decode() for raw in redis.lrange(queue, 0, -1)}
    assert waiting == {f"{greedy.id}-0", f"{greedy.id}-1", f"{second.id}-2"}, "what the batch took left the queue"
    assert redis.llen(queues.task_queue(redis, low).key) == 2, "a lower priority is left alone"

    late = batching.more(ctx, head)
    assert [f"{run.task.id}-{run.index}" for run in late] == [f"{second.id}-2"], "the greedy task's never join"
    ctx.lifecycle.cancel(second)
    kept = [run for run in [head, *late] if chunk_jobs._active(ctx, run)]
    assert kept == [head], "a task cancelled while its batch fills is dropped from it"
    decoded = chunk_jobs._decode(ctx, kept)
    assert "ask not what your country can do for you" in normalise(decoded[0][0].text, "en")


def test_a_window_left_open_reads_the_same_with_word_timestamps(engine: windows.engines.Engine) -> None:
    """Chunk 9 of the 16-minute file (as cut by default), whose last segment Whisper leaves open. The rest is decoded
    again from where Whisper's timestamps put it; word timings used to move the segment before it past the window's
    24.2 s of audio first, so the rest was empty and the decode failed."""
    audio = splitting.decode(DATA / "long" / "asterisk_en_dev_concat.flac", 1000)
    chunk = audio[round(243.616 * splitting.SAMPLE_RATE) : round(267.84 * splitting.SAMPLE_RATE)]
    read = [
        [segment.text for segment in windows.decode(engine, [window(chunk, word_timestamps=timed)])[0]]
        for timed in (False, True)
    ]
    assert read[0] == read[1]
    assert read[1][-1] == " Extension is dialed."

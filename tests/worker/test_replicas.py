"""Replicas: a CPU batch worker decodes with two copies of its model at once, each taking its own jobs."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import jiwer
import pytest
from redis import Redis

from benchmark.scoring import normalise
from shared import fleet
from shared.settings import Settings
from tests.conftest import StartWorker, manifest, submit, wait_for
from tests.worker.test_lane import CLIP, held
from tests.worker.test_long import LJSPEECH, finished, task
from worker import engine, replicas


@pytest.mark.slow
def test_a_worker_runs_two_normal_priority_tasks_at_once_with_two_copies(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], start_worker: StartWorker, redis: Redis
) -> None:
    served("tiny.en")
    api = api_factory()
    long = submit(api, LJSPEECH, language="en").json()["id"]  # 222 s: one job, not split
    worker = start_worker(burst=False, replicas=2, priority_lane="off")
    worker.log.wait_for("replica 1 ready")
    wait_for(lambda: task(api, long)["progress"] > 0, timeout_s=120)
    short = submit(api, CLIP, language="en").json()["id"]
    # One worker holds both jobs at once: its replica took the second while the main copy runs the first.
    wait_for(lambda: {long, short} <= held(redis), timeout_s=60, every_s=0.02)
    (info,) = [info for info in fleet.live_workers(redis) if info.pid == worker.pid]
    assert info.batch == 2, "the fleet counts both copies when it queues a long file's chunks"
    done = finished(api, short, timeout_s=120)
    assert done["status"] == "completed", done["error"]
    assert task(api, long)["status"] == "processing", "the second task did not wait for the first"
    reference = normalise(manifest()["ast_en_priv-callee-options"]["reference"], "en")
    assert jiwer.wer(reference, normalise(done["result"]["text"], "en")) < 0.2
    assert finished(api, long, timeout_s=600)["status"] == "completed"


def test_replicas_are_two_on_a_cpu_of_two_cores_and_share_its_threads(settings: Settings) -> None:
    cores = len(os.sched_getaffinity(0))
    batch = settings.model_copy(update={"role": "batch"})
    assert replicas.count(batch, "cpu") == (2 if cores >= 2 else 1)
    assert replicas.count(batch, "cuda") == 1, "on a GPU, batches of windows fill the device"
    assert replicas.count(batch.model_copy(update={"role": "both"}), "cpu") == 1, "live sessions share the main copy"
    assert replicas.count(batch, "cpu", burst=True) == 1
    assert replicas.count(batch.model_copy(update={"replicas": 3}), "cuda") == 3
    assert engine.cpu_threads(batch, copies=2) == max(1, min(4, cores // 2))
    assert engine.cpu_threads(batch, copies=1) == min(4, cores)
    assert engine.cpu_threads(batch.model_copy(update={"cpu_threads": 3}), copies=2) == 3

"""The priority lane: a high-priority task runs at once beside a lower-priority job, not after it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import httpx
import jiwer
import pytest
from redis import Redis

from benchmark.scoring import normalise
from shared import fleet
from shared.errors import TaskTimeout
from shared.settings import Settings
from tests.conftest import DATA, StartWorker, manifest, submit, wait_for
from tests.worker.test_long import LJSPEECH, finished, task
from worker import engine, lane
from worker.deadline import deadline

CLIP = DATA / "audio" / "asterisk" / "en" / "priv-callee-options.opus"  # 31 s


def held(redis: Redis) -> set[str]:
    """Every job the live workers hold."""
    return {job for jobs in fleet.holdings(redis, [w.id for w in fleet.live_workers(redis)]).values() for job in jobs}


@pytest.mark.slow
def test_a_high_priority_task_runs_beside_the_low_priority_job_in_hand(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], start_worker: StartWorker, redis: Redis
) -> None:
    served("tiny.en")
    api = api_factory()
    low = submit(api, LJSPEECH, language="en", priority="low").json()["id"]  # 222 s: one job, not split
    worker = start_worker(burst=False, replicas=1)  # no replica to take the high-priority task in the lane's place
    worker.log.wait_for("priority lane ready")
    wait_for(lambda: task(api, low)["progress"] > 0, timeout_s=120)
    high = submit(api, CLIP, language="en", priority="high").json()["id"]
    # The worker announces both jobs at once, so a worker that dies now loses neither.
    wait_for(lambda: {low, high} <= held(redis), timeout_s=60, every_s=0.02)
    done = finished(api, high, timeout_s=120)
    assert done["status"] == "completed", done["error"]
    assert task(api, low)["status"] == "processing", "the high-priority task did not wait for the low one"
    reference = normalise(manifest()["ast_en_priv-callee-options"]["reference"], "en")
    assert jiwer.wer(reference, normalise(done["result"]["text"], "en")) < 0.2
    assert finished(api, low, timeout_s=600)["status"] == "completed", "the low task goes on and ends"


def test_the_main_copy_of_the_model_decodes_at_the_lowest_cpu_priority() -> None:
    settings = Settings(model="tiny.en")
    assert lane.wanted(settings, "cpu") and not lane.wanted(settings, "cuda")
    assert not lane.wanted(settings.model_copy(update={"role": "both"}), "cpu"), "live sessions share the one copy"
    assert lane.wanted(settings.model_copy(update={"priority_lane": "on"}), "cuda")
    assert not lane.wanted(settings.model_copy(update={"priority_lane": "off"}), "cpu")

    def niceness_of_a_thread_started_here() -> int:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
        thread.start()
        thread.join()
        return seen[0]

    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert engine.niced(0, niceness_of_a_thread_started_here) == own
    assert engine.niced(lane.MAIN_NICE, niceness_of_a_thread_started_here) == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == own, "the caller's own thread keeps its priority"


def test_a_deadline_holds_in_a_thread_other_than_the_main_one() -> None:
    outcome: list[str] = []

    def run() -> None:
        try:
            with deadline(0.2):
                threading.Event().wait(0.05)
            outcome.append("within")
            with deadline(0.2):
                while True:
                    pass
        except TaskTimeout as exc:
            outcome.append(exc.code)
        threading.Event().wait(0.3)  # a deadline that ended in time raises nothing later
        outcome.append("after")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert outcome == ["within", "timeout", "after"]

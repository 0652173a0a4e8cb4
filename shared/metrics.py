"""Figures for Prometheus, kept in Redis so that every API replica reports the whole fleet.

Workers record processing time and real-time factor per model into histogram buckets, the API counts
upload bytes, the callback thread counts outcomes; `/metrics` adds queue lengths, tasks by status and
live workers, read at scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from redis import Redis

from shared import keys

HISTOGRAMS: dict[str, tuple[str, Sequence[float]]] = {
    "processing_seconds": ("Seconds a worker spent on a task.", (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)),
    "real_time_factor": ("Processing seconds per second of audio.", (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2)),
    "diarization_seconds": ("Seconds a worker spent labelling a task's speakers.", (0.5, 1, 2, 5, 10, 30, 60, 300)),
    "live_final_latency_seconds": (
        "Seconds from the end of a live turn's speech reaching a worker to its final text.",
        (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
    ),
}


def observe(redis: Redis, name: str, model: str, value: float) -> None:
    """Add one observation to a histogram: its bucket, the count and the sum."""
    bounds = HISTOGRAMS[name][1]
    bucket = bounds[index] if (index := bisect.bisect_left(bounds, value)) < len(bounds) else "+Inf"
    pipe = redis.pipeline()
    key = keys.metrics_histogram_key(name, model)
    pipe.hincrby(key, f"le:{bucket}", 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", value)
    pipe.sadd(keys.metrics_models_key(), model)
    pipe.execute()


def observe_completion(redis: Redis, model: str, processing_s: float, audio_s: float) -> None:
    """A completed task's processing time and real-time factor."""
    observe(redis, "processing_seconds", model, processing_s)
    if audio_s > 0:
        observe(redis, "real_time_factor", model, processing_s / audio_s)


def count(redis: Redis, name: str, label: str, amount: int = 1) -> None:
    """Add to a counter (one Redis hash per counter, a field per label value)."""
    redis.hincrby(keys.metrics_counter_key(name), label, amount)

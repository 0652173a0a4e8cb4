"""GET /metrics in Prometheus's text format, from Redis (so any API replica reports the whole fleet)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from rq import Queue

from api.auth import authenticate
from api.deps import RedisDep, SettingsDep, StorageDep
from shared import fleet, keys
from shared.enums import TaskStatus
from shared.errors import Forbidden
from shared.metrics import HISTOGRAMS
from shared.storage import UploadStorage

router = APIRouter(tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in raw.items()}


class FleetCollector(Collector):
    """Reads every figure from Redis at scrape time (and the upload volume's space from this replica's view of it)."""

    def __init__(self, redis: Redis, storage: UploadStorage) -> None:
        self.redis = redis
        self.storage = storage

    def collect(self) -> Iterator[Metric]:
        yield self._queues()
        yield self._statuses()
        yield self._workers()
        yield self._live_sessions()
        yield from self._volume()
        yield from self._histograms()
        yield from self._counters()

    def _queues(self) -> Metric:
        family = GaugeMetricFamily("whisperq_queue_length", "Jobs waiting, per RQ queue.", labels=["queue"])
        for queue in Queue.all(connection=self.redis):
            if queue.name.startswith(keys.PREFIX):
                family.add_metric([queue.name], queue.count)
        return family

    def _statuses(self) -> Metric:
        family = GaugeMetricFamily("whisperq_tasks", "Tasks kept, by status.", labels=["status"])
        for status in TaskStatus:
            family.add_metric([status.value], int(self.redis.zcard(keys.index_key("status", status.value))))
        return family

    def _workers(self) -> Metric:
        family = GaugeMetricFamily("whisperq_workers", "Live workers, by model and device.", labels=["model", "device"])
        counts: dict[tuple[str, str], int] = {}
        for worker in fleet.live_workers(self.redis):
            counts[(worker.model, worker.device)] = counts.get((worker.model, worker.device), 0) + 1
        for (model, device), number in sorted(counts.items()):
            family.add_metric([model, device], number)
        return family

    def _live_sessions(self) -> Metric:
        family = GaugeMetricFamily("whisperq_live_sessions_open", "Live sessions open now, across API replicas.")
        now_ms = time.time() * 1000
        self.redis.zremrangebyscore(keys.live_open_key(), "-inf", now_ms)  # those of a replica that died
        family.add_metric([], int(self.redis.zcard(keys.live_open_key())))
        return family

    def _volume(self) -> Iterator[Metric]:
        free = GaugeMetricFamily("whisperq_upload_volume_free_bytes", "Free space on the upload volume.")
        free.add_metric([], self.storage.free_bytes())
        yield free
        reserve = GaugeMetricFamily(
            "whisperq_upload_volume_reserve_bytes", "Free space under which uploads are refused (507, storage_full)."
        )
        reserve.add_metric([], self.storage.reserve_bytes)
        yield reserve

    def _histograms(self) -> Iterator[Metric]:
        models = sorted(m.decode() for m in cast(set[bytes], self.redis.smembers(keys.metrics_models_key())))
        for name, (documentation, bounds) in HISTOGRAMS.items():
            family = HistogramMetricFamily(f"whisperq_{name}", documentation, labels=["model"])
            for model in models:
                raw = _text(cast(dict[bytes, bytes], self.redis.hgetall(keys.metrics_histogram_key(name, model))))
                if not raw:
                    continue
                cumulative, buckets = 0, []
                for bound in [*map(str, bounds), "+Inf"]:
                    cumulative += int(raw.get(f"le:{bound}", 0))
                    buckets.append((bound, cumulative))
                family.add_metric([model], buckets, sum_value=float(raw.get("sum", 0)))
            yield family

    def _counters(self) -> Iterator[Metric]:
        for name, label, documentation in (
            ("upload_bytes", "kind", "Bytes of media received."),
            ("callbacks", "outcome", "Callback delivery attempts, by outcome."),
            ("live_audio_seconds", "model", "Seconds of audio streamed into live sessions."),
        ):
            family = CounterMetricFamily(f"whisperq_{name}", documentation, labels=[label])
            raw = _text(cast(dict[bytes, bytes], self.redis.hgetall(keys.metrics_counter_key(name))))
            for value, number in sorted(raw.items()):
                family.add_metric([value], float(number))
            yield family


@router.get("/metrics", response_class=Response)
def metrics(request: Request, redis: RedisDep, settings: SettingsDep, storage: StorageDep) -> Response:
    """Prometheus metrics: queues, tasks, workers, processing time and RTF, uploads, callbacks, live sessions.
    / 监控指标。"""
    if settings.protect_metrics and not authenticate(request).admin:
        raise Forbidden("the metrics need an admin key")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(redis, storage))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)

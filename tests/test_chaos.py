"""The chaos harness's own counting: a broken service must show up in its figures, not be counted away."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
from redis import Redis
from standardwebhooks.webhooks import Webhook

from benchmark.chaos import SECRET, decoding_runs, worker_pid
from benchmark.webhooks import WebhookReceiver
from shared import keys
from shared.events import EventLog


def test_the_receiver_counts_repeats_and_processes_each_webhook_id_once() -> None:
    body = json.dumps({"type": "task.completed", "data": {}})
    stamp = datetime.now(timezone.utc)
    signed = {
        "webhook-id": "msg_a",
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_a", stamp, body),
    }
    with WebhookReceiver(SECRET) as receiver, httpx.Client() as client:
        answers = [client.post(receiver.url, content=body, headers=signed).status_code for _ in range(2)]
        forged = {**signed, "webhook-signature": "v1,AAAA"}
        answers.append(client.post(receiver.url, content=body, headers=forged).status_code)
    assert answers == [200, 200, 401]
    assert receiver.received == {"msg_a": 2} and receiver.duplicates == 1 and receiver.invalid == 1
    assert receiver.processed == {"msg_a": "task.completed"}


def status(value: str) -> dict[str, str]:
    return {"type": "status", "status": value}


def segment(index: int) -> dict[str, str]:
    return {"type": "segment", "progress": "0.5", "segment": json.dumps({"id": index, "text": "x"})}


def test_runs_beyond_the_first_are_counted_from_the_event_stream(redis: Redis) -> None:
    histories = {
        "once": [status("queued"), status("processing"), segment(1), segment(2), status("completed")],
        "recovered": [status("queued"), status("processing"), segment(1), status("queued"), status("processing")],
        "side by side": [status("queued"), status("processing"), segment(1), segment(1), segment(2), segment(2)],
    }
    for task_id, history in histories.items():
        for event in history:  # the streams as the task store and the workers write them
            redis.xadd(keys.events_key(task_id), event)  # type: ignore[arg-type]
    runs = {task_id: decoding_runs(EventLog(redis).after(task_id, "0")) for task_id in histories}
    assert runs == {"once": 1, "recovered": 2, "side by side": 2}


def test_worker_ids_name_their_process() -> None:
    assert worker_pid("gpu-host-7-4242-a1b2c3") == 4242
    assert worker_pid("announced-tiny.en") is None

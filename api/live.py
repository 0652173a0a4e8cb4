"""Live status as server-sent events: status changes, progress with each decoded segment, the final state.

sse-starlette writes the events, pings an idle stream and stops the generator when the client goes away.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from api.limits import Slot
from api.service import TaskService
from shared.enums import TaskStatus
from shared.errors import TaskNotFound

POLL_S = 0.25
KEEPALIVE_S = 15.0


def _data(fields: dict[str, str]) -> str:
    if fields["type"] == "status":
        return json.dumps({"status": fields["status"]})
    if fields["type"] == "stage":  # the task moved on from transcribing, e.g. to diarizing
        return json.dumps({"stage": fields["stage"]})
    data = {"progress": float(fields["progress"]), "segment": json.loads(fields["segment"])}
    if "chunk" in fields:  # a chunk of a split file; chunks may arrive out of order
        data["chunk"] = int(fields["chunk"])
    return json.dumps(data)


def response(
    tasks: TaskService, task_id: str, last_event_id: str, slot: Slot, lifetime_s: float
) -> EventSourceResponse:
    """The task's event stream as a response, pinged while quiet; it gives its slot back when it ends."""
    events = _held(stream(tasks, task_id, last_event_id, lifetime_s), slot)
    return EventSourceResponse(events, ping=KEEPALIVE_S, sep="\n")


async def _held(events: AsyncIterator[ServerSentEvent], slot: Slot) -> AsyncIterator[ServerSentEvent]:
    try:
        async for event in events:
            yield event
    finally:
        slot.release()


async def stream(
    tasks: TaskService, task_id: str, last_event_id: str = "0", lifetime_s: float = float("inf")
) -> AsyncIterator[ServerSentEvent]:
    """Every event of the task after `last_event_id`, then new ones as they come, ending with `final`.

    Past `lifetime_s` the stream just ends, as if the connection dropped: clients resume with Last-Event-ID.
    """
    quiet_since = started = time.monotonic()
    while time.monotonic() - started < lifetime_s:
        events = await run_in_threadpool(tasks.stores.events.after, task_id, last_event_id)
        for event_id, fields in events:
            last_event_id = event_id
            yield ServerSentEvent(_data(fields), event=fields["type"], id=event_id)
            if fields["type"] == "status" and TaskStatus(fields["status"]).finished:
                view = await run_in_threadpool(tasks.describe, task_id)
                yield ServerSentEvent(view.model_dump_json(), event="final")
                return
        if events:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            if not await _exists(tasks, task_id):
                yield ServerSentEvent(json.dumps({"id": task_id}), event="deleted")
                return
            quiet_since = time.monotonic()
        await asyncio.sleep(POLL_S)


async def _exists(tasks: TaskService, task_id: str) -> bool:
    try:
        await run_in_threadpool(tasks.get, task_id)
        return True
    except TaskNotFound:
        return False

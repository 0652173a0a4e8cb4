"""Live status as server-sent events: status changes, progress with each decoded segment, the final state."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from api.service import TaskService
from shared.enums import TaskStatus
from shared.errors import TaskNotFound

POLL_S = 0.25
KEEPALIVE_S = 15.0


def sse(event: str, data: str, event_id: str | None = None) -> str:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _data(fields: dict[str, str]) -> str:
    if fields["type"] == "status":
        return json.dumps({"status": fields["status"]})
    data = {"progress": float(fields["progress"]), "segment": json.loads(fields["segment"])}
    if "chunk" in fields:  # a chunk of a split file; chunks may arrive out of order
        data["chunk"] = int(fields["chunk"])
    return json.dumps(data)


async def stream(tasks: TaskService, task_id: str, last_event_id: str = "0") -> AsyncIterator[str]:
    """Every event of the task after `last_event_id`, then new ones as they come, ending with `final`."""
    quiet_since = time.monotonic()
    while True:
        events = await run_in_threadpool(tasks.store.events_after, task_id, last_event_id)
        for event_id, fields in events:
            last_event_id = event_id
            yield sse(fields["type"], _data(fields), event_id)
            if fields["type"] == "status" and TaskStatus(fields["status"]).finished:
                view = await run_in_threadpool(tasks.describe, task_id)
                yield sse("final", view.model_dump_json())
                return
        if events:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            if not await _exists(tasks, task_id):
                yield sse("deleted", json.dumps({"id": task_id}))
                return
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)


async def _exists(tasks: TaskService, task_id: str) -> bool:
    try:
        await run_in_threadpool(tasks.get, task_id)
        return True
    except TaskNotFound:
        return False

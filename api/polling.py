"""Status polls made cheap: one Redis round trip, a strong ETag, 304 for an unchanged task, and long polls.

Polls are what most clients follow a task by, and every API replica takes them, so a poll runs on the event loop
with the async Redis client (no thread hop, and a long poll's wait holds no thread). The stored result is spliced
into the answer as the worker stored it, never parsed or validated again. The ETag hashes the answer less the
result (a result never changes once stored) together with the view's name, so it changes whenever anything shown
changes and differs between the two views.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from fastapi import Response
from redis.asyncio import Redis as AsyncRedis
from starlette.concurrency import run_in_threadpool

from api.service import TaskService
from shared.enums import ResponseFormat, TaskStatus, TaskView
from shared.errors import TaskNotFound
from shared.events import wait_after
from shared.schemas import Task, TaskPublic
from shared.store import snapshot

# The longest a long poll holds its answer, in seconds: under common proxies' idle timeouts.
WAIT_MAX_S = 60.0


@dataclass(frozen=True)
class Rendered:
    """One view of a task at one instant: its JSON, its ETag, and the last event of its stream then."""

    body: bytes
    etag: str
    last_event: str


async def render(tasks: TaskService, redis: AsyncRedis, task_id: str, view: TaskView) -> Rendered:
    """The task's view as the caller may see it; TaskNotFound, as for a missing task, when it is someone else's."""
    snap = await snapshot(redis, task_id, with_result=view is TaskView.FULL)
    if not tasks.caller.may_see(snap.task.owner):
        raise TaskNotFound(f"no task with id {task_id!r}")
    position, chunks_done = await _whereabouts(tasks, snap.task)
    public = TaskPublic.build(snap.task, position, None, snap.deliveries, chunks_done)
    public.result_formats = list(ResponseFormat) if snap.has_result else None
    head = public.model_dump_json(exclude={"result"}).encode()
    etag = hashlib.blake2b(view.value.encode() + b"\n" + head, digest_size=16).hexdigest()
    body = head[:-1] + b',"result":' + (snap.result or b"null") + b"}"
    return Rendered(body=body, etag=f'"{etag}"', last_event=snap.last_event)


async def _whereabouts(tasks: TaskService, task: Task) -> tuple[int | None, int | None]:
    """Queue position and chunks done, looked up (blocking, so in a thread) only for a task that has them."""
    if task.status is TaskStatus.QUEUED or (task.chunks is not None and task.status is not TaskStatus.COMPLETED):
        return await run_in_threadpool(tasks.whereabouts, task)
    return None, task.chunks


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this ETag (compared weakly, as RFC 9110 says for it) or is `*`."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def poll(
    tasks: TaskService, redis: AsyncRedis, task_id: str, view: TaskView, wait_s: float, if_none_match: str | None
) -> Response:
    """The view, or 304 while the client's ETag matches; with `wait_s`, a 304 only once that time has passed.

    A long poll sleeps on the task's event stream, where the store and the workers write each status change and
    each bit of progress, and looks again after each event; at the deadline it answers with what is there then.
    """
    deadline = time.monotonic() + wait_s
    current = await render(tasks, redis, task_id, view)
    while matches(if_none_match, current.etag) and (left_s := deadline - time.monotonic()) > 0:
        await wait_after(redis, task_id, current.last_event, left_s)
        current = await render(tasks, redis, task_id, view)
    headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
    if matches(if_none_match, current.etag):
        return Response(status_code=304, headers=headers)
    return Response(current.body, media_type="application/json", headers=headers)

"""Status polls made cheap: one Redis round trip, a strong ETag, 304 for an unchanged task, and long polls.

Polls are what most clients follow a task by, and every API replica takes them, so a poll runs on the event loop
with the async Redis client (no thread hop, and a long poll's wait holds no thread). The stored result is spliced
into the answer as the worker stored it, never parsed or validated again, and a view once rendered is kept while
what is stored does not change (`RenderCache`), so an unchanged task costs one read and a digest. The ETag hashes
the answer less the result (a result never changes once stored) together with the view's name, so it changes
whenever anything shown changes and differs between the two views.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from fastapi import Response
from redis.asyncio import Redis as AsyncRedis
from starlette.concurrency import run_in_threadpool

from api.service import TaskService
from shared.enums import ResponseFormat, TaskStatus, TaskView
from shared.errors import TaskNotFound
from shared.events import wait_after
from shared.schemas import Task, TaskPublic
from shared.store import Stored, read_result, read_stored

# The longest a long poll holds its answer, in seconds: under common proxies' idle timeouts.
WAIT_MAX_S = 60.0


@dataclass(frozen=True)
class Rendered:
    """One view of a task at one instant: its JSON, its ETag, and the last event of its stream then."""

    body: bytes
    etag: str
    last_event: str


class RenderCache:
    """The views this process last rendered, by task and view, each with the fingerprint of what was stored then.

    A poll of a task that has not changed since is answered from here, not validated and rendered again. Views that
    show a queue position or chunks done (read beside the task's hash) are not kept. Least recently used dropped.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._views: OrderedDict[tuple[str, TaskView], tuple[bytes, Rendered]] = OrderedDict()

    def get(self, task_id: str, view: TaskView, fingerprint: bytes) -> Rendered | None:
        """The view rendered from exactly this stored state, if it is still here."""
        kept = self._views.get((task_id, view))
        if kept is None or kept[0] != fingerprint:
            return None
        self._views.move_to_end((task_id, view))
        return kept[1]

    def put(self, task_id: str, view: TaskView, fingerprint: bytes, rendered: Rendered) -> None:
        """Keep a view rendered from the stored state with this fingerprint."""
        self._views[(task_id, view)] = (fingerprint, rendered)
        self._views.move_to_end((task_id, view))
        if len(self._views) > self.size:
            self._views.popitem(last=False)


async def render(tasks: TaskService, redis: AsyncRedis, cache: RenderCache, task_id: str, view: TaskView) -> Rendered:
    """The task's view as the caller may see it; TaskNotFound, as for a missing task, when it is someone else's."""
    stored = await read_stored(redis, task_id)
    if not tasks.caller.may_see(stored.owner):
        raise TaskNotFound(f"no task with id {task_id!r}")
    fingerprint = stored.fingerprint
    rendered = cache.get(task_id, view, fingerprint)
    if rendered is None:
        task = stored.task
        rendered = await _rendered(tasks, redis, stored, task, view)
        if not _looked_up(task):
            cache.put(task_id, view, fingerprint, rendered)
    return replace(rendered, last_event=stored.last_event)


async def _rendered(tasks: TaskService, redis: AsyncRedis, stored: Stored, task: Task, view: TaskView) -> Rendered:
    """The view of a stored task: the result is spliced in as the worker stored it, never parsed again."""
    position, chunks_done = await _whereabouts(tasks, task)
    public = TaskPublic.build(task, position, None, stored.delivered, chunks_done)
    public.result_formats = list(ResponseFormat) if stored.has_result else None
    head = public.model_dump_json(exclude={"result"}).encode()
    etag = hashlib.blake2b(view.value.encode() + b"\n" + head, digest_size=16).hexdigest()
    result = await read_result(redis, task.id) if view is TaskView.FULL and stored.has_result else None
    body = head[:-1] + b',"result":' + (result or b"null") + b"}"
    return Rendered(body=body, etag=f'"{etag}"', last_event=stored.last_event)


def _looked_up(task: Task) -> bool:
    """Whether the view shows what is read beside the task's hash: a queue position, or a split task's chunks done."""
    return task.status is TaskStatus.QUEUED or (task.chunks is not None and task.status is not TaskStatus.COMPLETED)


async def _whereabouts(tasks: TaskService, task: Task) -> tuple[int | None, int | None]:
    """Queue position and chunks done, looked up (blocking, so in a thread) only for a task that has them."""
    if _looked_up(task):
        return await run_in_threadpool(tasks.whereabouts, task)
    return None, task.chunks


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names this ETag (compared weakly, as RFC 9110 says for it) or is `*`."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def poll(
    tasks: TaskService,
    redis: AsyncRedis,
    cache: RenderCache,
    task_id: str,
    view: TaskView,
    wait_s: float,
    if_none_match: str | None,
) -> Response:
    """The view, or 304 while the client's ETag matches; with `wait_s`, a 304 only once that time has passed.

    A long poll sleeps on the task's event stream, where the store and the workers write each status change and
    each bit of progress, and looks again after each event; at the deadline it answers with what is there then.
    """
    deadline = time.monotonic() + wait_s
    current = await render(tasks, redis, cache, task_id, view)
    while matches(if_none_match, current.etag) and (left_s := deadline - time.monotonic()) > 0:
        await wait_after(redis, task_id, current.last_event, left_s)
        current = await render(tasks, redis, cache, task_id, view)
    headers = {"ETag": current.etag, "Cache-Control": "no-cache"}
    if matches(if_none_match, current.etag):
        return Response(status_code=304, headers=headers)
    return Response(current.body, media_type="application/json", headers=headers)

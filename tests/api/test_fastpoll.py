"""The status-poll fast path: what it answers itself (exactly what the route answers), and what it passes on.

The fast path runs in this process in front of a recorder standing in for the rest of the app, with the real app's
state (its Redis clients and stores, started by its lifespan) against a real Redis; the route's answers come from a
real API process over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis

from api.fastpoll import FastPolls
from api.main import create_app
from shared.enums import TaskStatus
from shared.settings import Settings
from shared.stores import Stores
from tests.api.test_polling import complete
from tests.conftest import queued_task

PASSED_ON = 599


class Answer:
    """One response as ASGI sent it."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """One app, so that its views rendered stay cached from one request to the next."""
    return create_app(settings)


def through_fast_path(app: FastAPI, path: str, query: str = "", headers: Iterable[tuple[str, str]] = ()) -> Answer:
    """One GET through FastPolls in front of a recorder that answers PASSED_ON, with the started app's state."""
    answer = Answer()

    async def recorder(scope: dict, receive: object, send: object) -> None:
        answer.status = PASSED_ON

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            answer.body += message.get("body", b"")

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def request() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            "app": app,
        }
        async with app.router.lifespan_context(app):
            await FastPolls(recorder)(scope, receive, send)

    asyncio.run(request())
    return answer


def test_a_plain_poll_is_answered_there_exactly_as_the_route_answers_it(
    api: httpx.Client, redis: Redis, settings: Settings, app: FastAPI
) -> None:
    stores = Stores.open(redis, settings)
    task = queued_task(redis, stores)
    complete(stores, task)
    for query in ("", "view=full", "view=status"):
        routed = api.get(f"/v1/tasks/{task.id}?{query}&wait=0")  # a `wait` goes to the route
        fast = through_fast_path(app, f"/v1/tasks/{task.id}", query)
        assert fast.status == routed.status_code == 200
        assert fast.body == routed.content
        assert fast.headers["etag"] == routed.headers["etag"]
        assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
        unchanged = through_fast_path(app, f"/v1/tasks/{task.id}", query, [("If-None-Match", fast.headers["etag"])])
        assert unchanged.status == 304 and unchanged.body == b"" and unchanged.headers["etag"] == fast.headers["etag"]


def test_a_queued_task_shows_its_queue_position_there(redis: Redis, settings: Settings, app: FastAPI) -> None:
    stores = Stores.open(redis, settings)
    first, second = queued_task(redis, stores), queued_task(redis, stores)
    answers = [through_fast_path(app, f"/v1/tasks/{task.id}", "view=status") for task in (first, second)]
    assert [answer.status for answer in answers] == [200, 200]
    assert [answer.body.count(b'"queue_position":') for answer in answers] == [1, 1]
    assert b'"queue_position":1' in answers[0].body and b'"queue_position":2' in answers[1].body


def test_a_changed_task_is_rendered_again(redis: Redis, settings: Settings, app: FastAPI) -> None:
    stores = Stores.open(redis, settings)
    task = queued_task(redis, stores)
    stores.tasks.start(task, "worker-1", TaskStatus.PROCESSING)
    before = through_fast_path(app, f"/v1/tasks/{task.id}")
    assert b'"progress":0.0' in before.body
    assert stores.tasks.update(task.id, [], progress=0.5)
    after = through_fast_path(app, f"/v1/tasks/{task.id}", headers=[("If-None-Match", before.headers["etag"])])
    assert after.status == 200 and b'"progress":0.5' in after.body and after.headers["etag"] != before.headers["etag"]


def test_everything_else_is_passed_on_to_the_app(redis: Redis, settings: Settings, app: FastAPI) -> None:
    stores = Stores.open(redis, settings)
    task = queued_task(redis, stores)
    path = f"/v1/tasks/{task.id}"
    for passed_on in [
        through_fast_path(app, path, "view=status&wait=5"),  # a long poll
        through_fast_path(app, path, "view=everything"),  # a bad view: the route's 422
        through_fast_path(app, path, "view=status&view=full"),
        through_fast_path(app, "/v1/tasks/no-such-task"),  # the route's 404
        through_fast_path(app, f"{path}/result"),
        through_fast_path(app, "/v1/tasks"),
    ]:
        assert passed_on.status == PASSED_ON
    assert through_fast_path(app, path).status == 200

"""Plain status polls answered ahead of FastAPI's routing, dependency solving and parameter checks.

A status poll is the request an API replica answers most, and the framework's work around it costs more than the
poll itself: on two cores a bare FastAPI route answers at about a third of the rate of a bare ASGI one. This layer
answers `GET /v1/tasks/{id}` with at most a `view` parameter, for a caller without a rate limit, with exactly
what the route answers (both go through `api.polling`). Anything else goes on to the app, whose answer is the
documented one: other routes, long polls, a bad parameter, a wrong key, a task that is missing or not the caller's.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api import polling
from api.auth import identify, rate_limit
from api.deps import task_service
from shared.enums import TaskView
from shared.errors import Unauthorized, WhisperqError

PREFIX = "/v1/tasks/"


class FastPolls:
    """ASGI middleware: status polls answered here, everything else passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(PREFIX):
            response = await _answer(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _answer(scope: Scope) -> Response | None:
    """The poll's answer, or None where the app should answer."""
    task_id = scope["path"][len(PREFIX) :]
    view = _view(scope["query_string"])
    if not task_id or "/" in task_id or view is None:
        return None
    state = scope["app"].state
    headers = Headers(scope=scope)
    try:
        caller = identify(headers.get("authorization"), state.settings)
    except Unauthorized:
        return None
    if rate_limit(caller) is not None:
        return None
    tasks, etag = task_service(state, caller), headers.get("if-none-match")
    try:
        return await polling.poll(tasks, state.live_redis, state.renders, task_id, view, 0.0, etag)
    except (WhisperqError, RedisConnectionError, RedisTimeoutError):  # answered by the app, as documented
        return None


def _view(query: bytes) -> TaskView | None:
    """The view a query string asks for, or None for anything but an empty query or one valid `view`."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    if not pairs:
        return TaskView.FULL
    if len(pairs) != 1 or pairs[0][0] != "view" or pairs[0][1] not in TaskView._value2member_map_:
        return None
    return TaskView(pairs[0][1])

"""Upload over a WebSocket: the task's fields as one JSON message, the media as binary frames, then `{"type": "end"}`;
the server answers with the task and then sends its events (status, segments with progress, final) until it ends.

The bytes go to the upload volume as an HTTP upload's do (the same size limit and media sniffing); an error is one
`{"type": "error", "code", "message"}` message and a close with code 4000 + the HTTP status the same error gets.
Browsers, which cannot set headers on a WebSocket, send the API key as the subprotocol `whisperq.bearer.<key>`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from api import live
from api.auth import Caller, check_rate, identify
from api.errors import http_status
from api.service import TaskService
from api.upload import ReceivedFile, within_idle
from shared.errors import InvalidRequest, MalformedRequest, WhisperqError
from shared.schemas import TaskCreate
from shared.storage import PendingUpload

router = APIRouter()

BEARER_PROTOCOL = "whisperq.bearer."


@router.websocket("/v1/tasks/ws")
async def upload_socket(websocket: WebSocket) -> None:
    """Receive one upload, then follow its task to the end."""
    key_protocol = _key_protocol(websocket)
    await websocket.accept(subprotocol=key_protocol)
    try:
        tasks = await run_in_threadpool(_tasks_for, websocket, key_protocol)
        task_id = await _receive_task(websocket, tasks)
        await websocket.send_json({"type": "task", "task": await run_in_threadpool(_public, tasks, task_id)})
        async for event in live.stream(tasks, task_id):
            await websocket.send_json({"type": event.event, "id": event.id, "data": json.loads(str(event.data))})
        await websocket.close(1000)
    except WhisperqError as exc:
        await _refuse(websocket, exc)
    except WebSocketDisconnect:
        pass  # the client went away; whatever it had sent is discarded


def _key_protocol(websocket: WebSocket) -> str | None:
    offered = websocket.scope.get("subprotocols") or []
    return next((protocol for protocol in offered if protocol.startswith(BEARER_PROTOCOL)), None)


def _tasks_for(websocket: WebSocket, key_protocol: str | None) -> TaskService:
    """The task service for the socket's caller (its Authorization header, or its key subprotocol)."""
    state = websocket.app.state
    authorization = websocket.headers.get("authorization")
    if authorization is None and key_protocol is not None:
        authorization = f"Bearer {key_protocol.removeprefix(BEARER_PROTOCOL)}"
    caller: Caller = identify(authorization, state.settings)
    check_rate(state.redis, caller)
    return TaskService(
        redis=state.redis, stores=state.stores, lifecycle=state.lifecycle, settings=state.settings, caller=caller
    )


async def _receive_task(websocket: WebSocket, tasks: TaskService) -> str:
    """The fields, the media and the end message; the task submitted. Nothing is left on the volume on error."""
    idle_s = tasks.settings.upload_idle_s
    create = _task_fields(await _next(websocket, idle_s))
    await run_in_threadpool(tasks.check_capacity, create)
    upload = tasks.stores.storage.receive(tasks.settings.max_upload_bytes)
    with upload:
        await _receive_media(websocket, upload, idle_s)
        await run_in_threadpool(upload.commit)
        submission = await run_in_threadpool(tasks.submit, create, ReceivedFile(upload, None, None))
    return submission.task.id


def _task_fields(message: dict[str, Any]) -> TaskCreate:
    if "text" not in message:
        raise MalformedRequest("send the task's fields first, as one JSON text message")
    try:
        fields = json.loads(message["text"])
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"the first message is not JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise MalformedRequest("the first message is a JSON object of the task's fields")
    if fields.get("url"):
        raise InvalidRequest("a URL is given over HTTP (POST /v1/tasks); this socket takes the media itself")
    return TaskCreate.from_form({key: _form_value(value) for key, value in fields.items() if value is not None})


def _form_value(value: Any) -> str:
    """A JSON value as the form field POST /v1/tasks takes (lists comma-joined, booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_form_value(item) for item in value)
    return value if isinstance(value, str) else json.dumps(value)


async def _receive_media(websocket: WebSocket, upload: PendingUpload, idle_s: float) -> None:
    """Binary frames onto the volume until the end message."""
    while True:
        message = await _next(websocket, idle_s)
        if message.get("bytes") is not None:
            await run_in_threadpool(upload.write, message["bytes"])
            continue
        try:
            end = json.loads(message.get("text") or "")
        except json.JSONDecodeError:
            end = None
        if end != {"type": "end"}:
            raise MalformedRequest('after the fields, send the media as binary frames, then {"type": "end"}')
        return


async def _next(websocket: WebSocket, idle_s: float) -> dict[str, Any]:
    """The client's next message; UploadStalled once it sends nothing for `idle_s`."""
    message = await within_idle(websocket.receive(), idle_s)
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return dict(message)


def _public(tasks: TaskService, task_id: str) -> dict[str, Any]:
    return dict(tasks.describe(task_id).model_dump(mode="json"))


async def _refuse(websocket: WebSocket, exc: WhisperqError) -> None:
    error: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
    if exc.details:
        error["details"] = exc.details
    try:
        await websocket.send_json(error)
        await websocket.close(4000 + http_status(exc), exc.code[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass  # already gone

"""Tasks: submit media, poll status, fetch the result, list, cancel, delete, redeliver the callback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api import live, polling
from api.deps import AsyncRedisDep, IdempotencyKey, RendersDep, SettingsDep, StorageDep, TaskId, TasksDep
from api.limits import Slots
from api.openapi import ERROR_RESPONSES, form_body
from api.summary import SummaryCreate, SummaryPublic, summarise
from api.upload import receive_form
from shared.enums import ResponseFormat, TaskView
from shared.schemas import TaskCreate, TaskPage, TaskPublic, TaskQuery, TranscribeOptions

# A slot outlives its stream's lifetime by this much before it lapses (its replica died holding it).
SLOT_SLACK_S = 60.0

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=ERROR_RESPONSES)

LastEventId = Annotated[
    str | None,
    Header(
        description="Resume after this event id. / 从该事件之后继续。",
        examples=["1700000000000-0"],
        pattern=r"^[0-9]{1,19}(-[0-9]{1,19})?$",
    ),
]
View = Annotated[
    TaskView,
    Query(
        description="full: with the result; status: without it (fetch it from /result). / status 不含结果。",
        examples=["status"],
    ),
]
Wait = Annotated[
    float,
    Query(
        ge=0,
        le=polling.WAIT_MAX_S,
        description="With If-None-Match: hold the answer up to this many seconds, until the task changes. / 长轮询。",
        examples=[30],
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        description="The ETag of the view you have: 304 while it is still current. / 已有视图的 ETag。",
        examples=['"5d41402abc4b2a76b9719d911017c592"'],
    ),
]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the ETag sent in If-None-Match is still current. / 未变化。"}
}
ResultFormat = Annotated[
    ResponseFormat,
    Query(description="Result format. / 结果格式：json、text、srt、vtt、tsv、verbose_json。", examples=["srt"]),
]


@router.post(
    "",
    status_code=202,
    response_model=TaskPublic,
    openapi_extra=form_body(TaskCreate, TranscribeOptions, file_required=False),
)
async def create_task(
    request: Request,
    response: Response,
    tasks: TasksDep,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: IdempotencyKey = None,
) -> TaskPublic:
    """Upload media (or give a URL) and queue it for transcription or translation. / 上传媒体或链接并排队。"""
    await run_in_threadpool(tasks.check_capacity)
    with await receive_form(request, storage, settings) as form:
        create = TaskCreate.from_form(form.fields)
        submission = await run_in_threadpool(tasks.submit, create, form.file, idempotency_key)
    response.headers["Location"] = str(request.url_for("get_task", task_id=submission.task.id))
    if submission.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await run_in_threadpool(tasks.describe, submission.task.id)


@router.get("", response_model=TaskPage)
def list_tasks(request: Request, tasks: TasksDep, query: Annotated[TaskQuery, Query()]) -> TaskPage:
    """Your tasks (all for an admin key), newest first, filtered and paged. / 任务列表，可筛选和分页。"""
    return tasks.list(query, str(request.url.remove_query_params(list(request.query_params))))


@router.get("/{task_id}", response_model=TaskPublic, responses=NOT_MODIFIED)
async def get_task(
    task_id: TaskId,
    tasks: TasksDep,
    redis: AsyncRedisDep,
    renders: RendersDep,
    view: View = TaskView.FULL,
    wait: Wait = 0.0,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """A task's status, progress, timings and, once completed, its result; with an ETag, and long polls on request.

    任务状态、进度、耗时，完成后含结果；带 ETag，可长轮询。
    """
    return await polling.poll(tasks, redis, renders, task_id, view, wait, if_none_match)


@router.get("/{task_id}/result", response_class=Response)
def get_result(task_id: TaskId, tasks: TasksDep, format: ResultFormat = ResponseFormat.JSON) -> Response:
    """The result as json, text, srt, vtt, tsv or verbose_json (OpenAI's shape). / 以指定格式获取结果。"""
    body, media_type = tasks.result(task_id, format)
    return Response(content=body, media_type=media_type)


@router.get(
    "/{task_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
)
async def task_events(
    task_id: TaskId, tasks: TasksDep, settings: SettingsDep, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """Live status as server-sent events: status, progress with each segment, then final. / 实时状态事件流。"""
    await run_in_threadpool(tasks.get, task_id)
    slots = Slots(tasks.redis, "event streams", settings.max_streams_per_key, settings.stream_max_s + SLOT_SLACK_S)
    slot = await run_in_threadpool(slots.take, tasks.caller.name)
    return live.response(tasks, task_id, last_event_id or "0", slot, settings.stream_max_s)


@router.post("/{task_id}/cancel", response_model=TaskPublic)
def cancel_task(task_id: TaskId, tasks: TasksDep) -> TaskPublic:
    """Stop a queued or running task; it stays, as cancelled. / 取消排队或运行中的任务，任务保留为已取消。"""
    return tasks.cancel(task_id)


@router.delete("/{task_id}", status_code=204, response_class=Response)
def delete_task(task_id: TaskId, tasks: TasksDep) -> Response:
    """Remove a task, its result, files and job; a running one is stopped. / 删除任务及其结果和文件。"""
    tasks.delete(task_id)
    return Response(status_code=204)


@router.post("/{task_id}/summary", response_model=SummaryPublic)
async def summarise_task(
    task_id: TaskId, tasks: TasksDep, settings: SettingsDep, request: SummaryCreate | None = None
) -> SummaryPublic:
    """Summarise the transcript with the configured language model. / 用配置的大语言模型总结转写内容。"""
    return await summarise(tasks, settings, task_id, request or SummaryCreate())


@router.post("/{task_id}/callback/redeliver", response_model=TaskPublic)
def redeliver_callback(task_id: TaskId, tasks: TasksDep) -> TaskPublic:
    """Send a finished task's callback again, with a fresh series of attempts. / 重新发送任务回调。"""
    return tasks.redeliver(task_id)

"""What the task routes do, as plain blocking functions (the routes run them off the event loop)."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from redis import Redis

from api.upload import ReceivedForm
from shared import fleet, queues
from shared.enums import ResponseFormat, TaskStatus, TaskType
from shared.errors import InvalidRequest, ModelNotServed, TaskFinished, TaskNotCompleted, TooManyTasks
from shared.formats import render
from shared.schemas import Source, Task, TaskCreate, TaskPage, TaskPublic, TaskQuery
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.store import TaskStore, utcnow


def check_model(redis: Redis, model: str, request: TaskCreate) -> None:
    """The model must be served by a live worker, and able to do what the task asks."""
    served = fleet.served_models(redis)
    if model not in served:
        listed = ", ".join(served) if served else "none (no worker is running)"
        raise ModelNotServed(
            f"no worker serves model {model!r}; served models: {listed}", details=[{"field": "model", "served": served}]
        )
    english_only = model.endswith(".en")
    if english_only and (request.task_type is TaskType.TRANSLATE or request.options.language not in (None, "en")):
        raise InvalidRequest(
            f"model {model!r} is English-only: it can neither translate nor read other languages; "
            "choose a multilingual model"
        )


def check_capacity(redis: Redis, store: TaskStore, settings: Settings, request: TaskCreate | None = None) -> None:
    """TooManyTasks past the queued-task limits: overall, and for the request's priority once it is known."""
    if store.queued_count() >= settings.max_queued_tasks:
        raise TooManyTasks(
            f"{settings.max_queued_tasks} tasks are queued already; try again later", settings.retry_after_s
        )
    limit = settings.max_queued_per_priority.get(request.priority.value) if request else None
    if request and limit is not None:
        models = sorted({*fleet.served_models(redis), request.model or settings.default_model})
        if queues.queued_counts(redis, models)[request.priority.value] >= limit:
            raise TooManyTasks(
                f"{limit} {request.priority.value}-priority tasks are queued already; try again later",
                settings.retry_after_s,
            )


def submit(redis: Redis, store: TaskStore, settings: Settings, form: ReceivedForm) -> Task:
    """Validate the form, then record the task and enqueue its job in one transaction."""
    request = TaskCreate.from_form(form.fields)
    if (form.upload is None) == (request.url is None):
        raise InvalidRequest("send the media either as a file in the form field 'file' or as a 'url', not both")
    model = request.model or settings.default_model
    check_model(redis, model, request)
    check_capacity(redis, store, settings, request)
    task = Task(
        id=uuid.uuid4().hex,
        status=TaskStatus.QUEUED,
        task_type=request.task_type,
        priority=request.priority,
        model=model,
        options=request.options,
        language=request.options.language,
        callback_url=request.callback_url,
        created_at=utcnow(),
        source=_source(form, request.url),
        upload_name=form.upload.name if form.upload else None,
    )
    pipe = redis.pipeline()
    pipe.multi()  # explicit, so RQ adds its commands to this transaction instead of opening its own
    store.create(task, pipe)
    queues.enqueue(redis, task, pipe, ttl_s=settings.task_ttl_s)
    pipe.execute()
    return task


def _source(form: ReceivedForm, url: str | None) -> Source:
    if form.upload is None:
        return Source(kind="url", url=url)
    return Source(
        kind="upload",
        filename=form.filename,
        content_type=form.content_type,
        format=form.upload.format,
        size_bytes=form.upload.size,
    )


def describe(redis: Redis, store: TaskStore, task_id: str) -> TaskPublic:
    """A task's public view: its queue position while queued, its result once completed."""
    task = store.get(task_id)
    position = queues.position(redis, task) if task.status is TaskStatus.QUEUED else None
    result = store.result(task_id) if task.status is TaskStatus.COMPLETED else None
    return TaskPublic.build(task, position, result)


def result(store: TaskStore, task_id: str, fmt: ResponseFormat) -> tuple[str, str]:
    """A completed task's result rendered in one format, with its media type."""
    task = store.get(task_id)
    if task.status is not TaskStatus.COMPLETED:
        raise TaskNotCompleted(f"task {task_id} is {task.status.value}; its result exists once it is completed")
    transcript = store.result(task_id)
    if transcript is None:
        raise TaskNotCompleted(f"the result of task {task_id} is no longer stored")
    return render(transcript, fmt)


def list_tasks(store: TaskStore, query: TaskQuery, page_url: str) -> TaskPage:
    """A page of tasks, newest first, with the URL of the next page."""
    tasks, total = store.find(query)
    following = query.offset + query.limit
    next_url = None
    if following < total:
        params = query.model_dump(mode="json", exclude_none=True) | {"offset": following}
        next_url = f"{page_url}?{urlencode(params)}"
    return TaskPage(
        tasks=[TaskPublic.build(task, None, None) for task in tasks],
        total=total,
        limit=query.limit,
        offset=query.offset,
        next=next_url,
    )


def cancel(redis: Redis, store: TaskStore, storage: UploadStorage, task_id: str) -> TaskPublic:
    """Stop a queued or running task and keep it as cancelled."""
    task = store.get(task_id)
    if task.status.finished or not store.cancel(task_id):
        raise TaskFinished(f"task {task_id} has already finished ({store.get(task_id).status.value})")
    _release(redis, storage, task)
    return describe(redis, store, task_id)


def delete(redis: Redis, store: TaskStore, storage: UploadStorage, task_id: str) -> None:
    """Remove a task everywhere: its job, its files, its result and its index entries."""
    task = store.get(task_id)
    store.delete(task)
    _release(redis, storage, task)


def _release(redis: Redis, storage: UploadStorage, task: Task) -> None:
    """Take the job off its queue and the media off the volume; a running worker stops at its next segment."""
    if task.status not in (TaskStatus.PROCESSING, TaskStatus.DOWNLOADING):
        queues.remove(redis, task)
    if task.upload_name:
        storage.remove(task.upload_name)

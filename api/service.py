"""What the task routes do, as plain blocking functions (the routes run them off the event loop)."""

from __future__ import annotations

import uuid

from redis import Redis

from api.upload import ReceivedForm
from shared import fleet, queues
from shared.enums import ResponseFormat, TaskStatus, TaskType
from shared.errors import InvalidRequest, ModelNotServed, TaskNotCompleted
from shared.formats import render
from shared.schemas import Source, Task, TaskCreate, TaskPublic
from shared.settings import Settings
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


def submit(redis: Redis, store: TaskStore, settings: Settings, form: ReceivedForm) -> Task:
    """Validate the form, then record the task and enqueue its job in one transaction."""
    request = TaskCreate.from_form(form.fields)
    if form.upload is None:
        raise InvalidRequest("send the media as a file in the form field 'file'")
    model = request.model or settings.default_model
    check_model(redis, model, request)
    task = Task(
        id=uuid.uuid4().hex,
        status=TaskStatus.QUEUED,
        task_type=request.task_type,
        priority=request.priority,
        model=model,
        options=request.options,
        callback_url=request.callback_url,
        created_at=utcnow(),
        source=Source(
            kind="upload",
            filename=form.filename,
            content_type=form.content_type,
            format=form.upload.format,
            size_bytes=form.upload.size,
        ),
        upload_name=form.upload.name,
    )
    pipe = redis.pipeline()
    pipe.multi()  # explicit, so RQ adds its commands to this transaction instead of opening its own
    store.create(task, pipe)
    queues.enqueue(redis, task, pipe, timeout_s=settings.job_timeout_s, ttl_s=settings.task_ttl_s)
    pipe.execute()
    return task


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

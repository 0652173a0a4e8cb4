"""What the task routes do, for one caller, as plain blocking methods (the routes run them off the event loop)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from api.auth import Caller
from api.upload import ReceivedFile
from shared import fleet, keys, logs, queues
from shared.clock import utcnow
from shared.enums import ResponseFormat, TaskStatus
from shared.errors import (
    IdempotencyConflict,
    InvalidRequest,
    ModelNotServed,
    TaskFinished,
    TaskNotCompleted,
    TaskNotFound,
    TooManyTasks,
)
from shared.formats import render
from shared.idempotency import FirstRequest, fingerprint
from shared.lifecycle import Lifecycle
from shared.netguard import Policy
from shared.schemas import Source, Task, TaskCreate, TaskPage, TaskPublic, TaskQuery, check_model_fits
from shared.settings import Settings
from shared.stores import Stores

log = logging.getLogger(__name__)


def check_model(redis: Redis, settings: Settings, model: str, request: TaskCreate) -> None:
    """The model must be served by a live worker or configured for the deployment, and able to do what is asked."""
    workers = fleet.live_workers(redis)
    live = [worker for worker in workers if worker.model == model]
    accepted = sorted({*(worker.model for worker in workers), *settings.configured_models})
    if not live and model not in settings.configured_models:
        raise ModelNotServed(
            f"no worker serves model {model!r} and the deployment is not configured for it; "
            f"models accepted: {', '.join(accepted)}",
            details=[{"field": "model", "served": accepted}],
        )
    # Without a live worker to say, the name does: OpenAI's English-only checkpoints end in .en.
    multilingual = all(worker.multilingual for worker in live) if live else not model.endswith(".en")
    check_model_fits(model, multilingual, request.task_type, request.options.language)


def _source(file: ReceivedFile | None, url: str | None) -> Source:
    if file is None:
        return Source(kind="url", url=url)
    return Source(
        kind="upload",
        filename=file.filename,
        content_type=file.content_type,
        format=file.upload.format,
        size_bytes=file.upload.size,
    )


@dataclass(frozen=True)
class Submission:
    """The task a submit created, or (`replayed`) the one its idempotency key had created before."""

    task: Task
    replayed: bool


@dataclass(frozen=True)
class TaskService:
    """Tasks as one caller sees them: its own, or everyone's for an admin key."""

    redis: Redis
    stores: Stores
    lifecycle: Lifecycle
    settings: Settings
    caller: Caller

    def check_capacity(self, request: TaskCreate | None = None) -> None:
        """TooManyTasks past the queued-task limits: overall, the caller's, and per priority once known."""
        retry = self.settings.retry_after_s
        if self.stores.tasks.queued_count() >= self.settings.max_queued_tasks:
            raise TooManyTasks(f"{self.settings.max_queued_tasks} tasks are queued already; try again later", retry)
        key = self.caller.key
        if (
            key
            and key.max_queued is not None
            and self.stores.tasks.queued_count(owner=self.caller.name) >= key.max_queued
        ):
            raise TooManyTasks(f"your key may have {key.max_queued} tasks queued at once; try again later", retry)
        limit = self.settings.max_queued_per_priority.get(request.priority.value) if request else None
        if request and limit is not None:
            models = sorted({*fleet.served_models(self.redis), request.model or self.settings.default_model})
            if queues.queued_counts(self.redis, models)[request.priority.value] >= limit:
                raise TooManyTasks(f"{limit} {request.priority.value}-priority tasks are queued already", retry)

    def submit(self, request: TaskCreate, file: ReceivedFile | None, idempotency_key: str | None = None) -> Submission:
        """Record the task and enqueue its job at once; with an idempotency key, a retry gets the first task back."""
        if idempotency_key is None:
            return Submission(self._create(request, file), replayed=False)
        media = file.upload.sha256() if file is not None else None
        digest = fingerprint(request.model_dump(mode="json"), media)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    first = self.stores.idempotency.first(pipe, self.caller.name, idempotency_key)
                    if first is not None:
                        pipe.unwatch()
                        return Submission(self._replay(first, digest, file), replayed=True)
                    once = (idempotency_key, digest)
                    return Submission(self._create(request, file, pipe, once), replayed=False)
                except WatchError:  # the same key arrived twice at once: the other one won, so replay it
                    continue

    def _replay(self, first: FirstRequest, digest: str, file: ReceivedFile | None) -> Task:
        if first.fingerprint != digest:
            raise IdempotencyConflict("this Idempotency-Key was used before for a different request; use a new key")
        if file is not None:  # the retry's own copy of the media is not needed
            file.upload.discard()
        return self.get(first.task_id)

    def _create(
        self,
        request: TaskCreate,
        file: ReceivedFile | None,
        pipe: Pipeline | None = None,
        once: tuple[str, str] | None = None,
    ) -> Task:
        """Check the request against the fleet and the limits, then record the task (and its key) in one transaction."""
        if (file is None) == (request.url is None):
            raise InvalidRequest("send the media either as a file in the form field 'file' or as a 'url', not both")
        policy = Policy(self.settings.allowed_hosts)
        for url in (request.url, request.callback_url):
            if url:
                policy.check_url(url)
        model = request.model or self.settings.default_model
        check_model(self.redis, self.settings, model, request)
        self.check_capacity(request)
        task = Task(
            id=uuid.uuid4().hex,
            status=TaskStatus.QUEUED,
            task_type=request.task_type,
            priority=request.priority,
            model=model,
            options=request.options,
            language=request.options.single_language,  # a list waits for detection to name one
            callback_url=request.callback_url,
            owner=self.caller.name,
            created_at=utcnow(),
            source=_source(file, request.url),
            upload_name=file.upload.name if file else None,
        )
        pipe = pipe if pipe is not None else self.redis.pipeline()
        pipe.multi()  # explicit, so RQ adds its commands to this transaction instead of opening its own
        self.stores.tasks.create(task, pipe)
        if once is not None:
            self.stores.idempotency.record(pipe, self.caller.name, once[0], FirstRequest(task.id, once[1]))
        secret = (self.caller.key.webhook_secret if self.caller.key else None) or self.settings.webhook_secret
        if task.callback_url and secret:  # so that any worker signs it, whatever its own settings
            self.stores.callbacks.sign_with(task.id, secret, pipe)
        if file is not None:
            pipe.hincrby(keys.metrics_counter_key("upload_bytes"), "upload", file.upload.size)
        queues.enqueue(self.redis, task, pipe, ttl_s=self.settings.task_ttl_s)
        pipe.execute()
        logs.current_task.set(task.id)
        log.info("task %s queued: %s with %s at %s priority", task.id, task.task_type.value, model, task.priority.value)
        return task

    def get(self, task_id: str) -> Task:
        """The task, if the caller may see it; TaskNotFound otherwise, exactly as for a task that does not exist."""
        task = self.stores.tasks.get(task_id)
        if not self.caller.may_see(task.owner):
            raise TaskNotFound(f"no task with id {task_id!r}")
        return task

    def describe(self, task_id: str) -> TaskPublic:
        """A task's public view: its queue position while queued, its result once completed."""
        task = self.get(task_id)
        result = self.stores.tasks.result(task_id) if task.status is TaskStatus.COMPLETED else None
        deliveries = self.stores.callbacks.deliveries(task_id)
        position, chunks_done = self.whereabouts(task)
        return TaskPublic.build(task, position, result, deliveries, chunks_done)

    def whereabouts(self, task: Task) -> tuple[int | None, int | None]:
        """The queue position of a queued task and the chunks done of a split one (None where neither applies)."""
        position = queues.position(self.redis, task) if task.status is TaskStatus.QUEUED else None
        return position, self._chunks_done(task)

    def _chunks_done(self, task: Task) -> int | None:
        if task.chunks is None:
            return None
        if task.status is TaskStatus.COMPLETED:
            return task.chunks
        split = self.stores.chunks.load(task.id)
        return split.finished if split else 0

    def result(self, task_id: str, fmt: ResponseFormat) -> tuple[str, str]:
        """A completed task's result rendered in one format, with its media type."""
        task = self.get(task_id)
        if task.status is not TaskStatus.COMPLETED:
            raise TaskNotCompleted(f"task {task_id} is {task.status.value}; its result exists once it is completed")
        transcript = self.stores.tasks.result(task_id)
        if transcript is None:
            raise TaskNotCompleted(f"the result of task {task_id} is no longer stored")
        return render(transcript, fmt)

    def list(self, query: TaskQuery, page_url: str) -> TaskPage:
        """A page of the caller's tasks (everyone's for an admin), newest first, with the next page's URL."""
        tasks, total = self.stores.tasks.find(query, owner=None if self.caller.admin else self.caller.name)
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

    def cancel(self, task_id: str) -> TaskPublic:
        """Stop a queued or running task and keep it as cancelled."""
        task = self.get(task_id)
        if task.status.finished or not self.lifecycle.cancel(task):
            raise TaskFinished(f"task {task_id} has already finished ({self.stores.tasks.get(task_id).status.value})")
        return self.describe(task_id)

    def delete(self, task_id: str) -> None:
        """Remove a task everywhere: its job, its files, its result, its deliveries and its index entries."""
        self.lifecycle.delete(self.get(task_id))

    def redeliver(self, task_id: str) -> TaskPublic:
        """Send the task's callback again (for a finished task with a callback URL)."""
        task = self.get(task_id)
        if not task.callback_url:
            raise InvalidRequest(f"task {task_id} has no callback_url")
        if not task.status.finished:
            raise TaskNotCompleted(f"task {task_id} is {task.status.value}; callbacks are sent once it has finished")
        if not self.stores.tasks.redeliver(task_id):  # deleted meanwhile: nothing is written
            raise TaskNotFound(f"no task with id {task_id!r}")
        return self.describe(task_id)

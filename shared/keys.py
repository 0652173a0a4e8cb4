"""Every Redis key and RQ queue name whisperq uses, in one place."""

from __future__ import annotations

from shared.enums import Priority

PREFIX = "whisperq"


def task_key(task_id: str) -> str:
    """Hash holding one task."""
    return f"{PREFIX}:task:{task_id}"


def result_key(task_id: str) -> str:
    """JSON transcript of a completed task."""
    return f"{PREFIX}:result:{task_id}"


# Task fields with a listing index each: a sorted set of task ids scored by creation time.
INDEXED_FIELDS = ("status", "priority", "task_type", "model", "language", "owner")


def index_prefix() -> str:
    """Start of every index key; the store's Lua script builds `index_prefix() + field + ':' + value`."""
    return f"{PREFIX}:index:"


def index_key(field: str, value: str) -> str:
    """Ids of the tasks whose field has this value, scored by creation time (ms)."""
    return f"{index_prefix()}{field}:{value}"


def indexes_key() -> str:
    """Set of every index key in use, so the janitor can prune them all without scanning."""
    return f"{PREFIX}:indexes"


def all_tasks_key() -> str:
    """Ids of every task, scored by creation time (ms)."""
    return f"{PREFIX}:tasks"


def listing_key(token: str) -> str:
    """A short-lived intersection of indexes for one listing request."""
    return f"{PREFIX}:listing:{token}"


def chunks_key(task_id: str) -> str:
    """Hash holding a split task's chunk plan, the state of each chunk and the segments of finished ones."""
    return f"{PREFIX}:chunks:{task_id}"


def recovery_lock_key(task_id: str) -> str:
    """Held for a minute by the janitor that re-enqueues a lost job, so only one does."""
    return f"{PREFIX}:recovering:{task_id}"


def leftover_sweep_key() -> str:
    """Held for a sweep's period by the worker that removes the volume's leftovers, so one does in each."""
    return f"{PREFIX}:leftover-sweep"


def callbacks_due_key() -> str:
    """Task ids whose callback is due, scored by when (ms): the callback queue."""
    return f"{PREFIX}:callbacks:due"


def callbacks_leased_key() -> str:
    """Task ids whose callback a worker is delivering, scored by when its lease ends (ms)."""
    return f"{PREFIX}:callbacks:leased"


def callback_secret_key(task_id: str) -> str:
    """The secret that signs a task's callbacks, as the API resolved it at submission."""
    return f"{PREFIX}:callback-secret:{task_id}"


def deliveries_key(task_id: str) -> str:
    """Every callback attempt of a task, oldest first (JSON)."""
    return f"{PREFIX}:deliveries:{task_id}"


def gpu_lease_key(pool: str, gpu: str) -> str:
    """Held by the worker that uses one GPU of a pool; lapses if it dies."""
    return f"{PREFIX}:gpu:{pool}:{gpu}"


def events_key(task_id: str) -> str:
    """A task's live events (status changes, progress, segments): a Redis stream."""
    return f"{PREFIX}:events:{task_id}"


def metrics_histogram_key(name: str, model: str) -> str:
    """One histogram of one model: bucket counts, count and sum."""
    return f"{PREFIX}:metrics:histogram:{name}:{model}"


def metrics_models_key() -> str:
    """Models that have histogram figures."""
    return f"{PREFIX}:metrics:models"


def metrics_counter_key(name: str) -> str:
    """One counter, a field per label value."""
    return f"{PREFIX}:metrics:counter:{name}"


def summary_key(task_id: str) -> str:
    """The latest summary of a task's transcript (JSON)."""
    return f"{PREFIX}:summary:{task_id}"


def rate_key(owner: str, window: int) -> str:
    """Requests of one API key in one minute."""
    return f"{PREFIX}:rate:{owner}:{window}"


def worker_key(worker_id: str) -> str:
    """Hash announcing one live worker (model, device); expires when it stops refreshing."""
    return f"{PREFIX}:worker:{worker_id}"


def worker_holds_key(worker_id: str) -> str:
    """The job a live worker runs now (a task id, or a chunk's job id); lapses with its announcement."""
    return f"{PREFIX}:worker:{worker_id}:holds"


def workers_key() -> str:
    """Set of worker ids that have announced themselves."""
    return f"{PREFIX}:workers"


def queue_name(model: str, priority: Priority) -> str:
    """RQ queue for one model at one priority."""
    return f"{PREFIX}:{model}:{priority.value}"


def queue_names(model: str) -> list[str]:
    """A model's queues, highest priority first: the order a worker listens in."""
    return [queue_name(model, priority) for priority in Priority]


def slots_key(kind: str, owner: str) -> str:
    """A sorted set of one owner's concurrent slots of a kind (event streams, summaries), scored by expiry."""
    return f"{PREFIX}:slots:{kind}:{owner}"


def idempotency_key(owner: str, key: str) -> str:
    """The task an owner's Idempotency-Key created, with the fingerprint of the request."""
    return f"{PREFIX}:idempotency:{owner}:{key}"


def live_waiting_key(model: str) -> str:
    """Live sessions of one model waiting for a worker to take them (a list of session ids)."""
    return f"{PREFIX}:live:waiting:{model}"


def live_in_key(session_id: str) -> str:
    """A live session's commands from the API to its worker: settings, audio, commit, clear, end (a stream)."""
    return f"{PREFIX}:live:{session_id}:in"


def live_out_key(session_id: str) -> str:
    """A live session's events from its worker to the API: speech started and stopped, text (a stream)."""
    return f"{PREFIX}:live:{session_id}:out"


def live_presence_key(session_id: str) -> str:
    """Refreshed by the API while the client is connected; a worker drops a session whose presence has lapsed."""
    return f"{PREFIX}:live:{session_id}:presence"


def live_open_key() -> str:
    """Open live sessions, scored by when their presence lapses (ms): the open-sessions gauge."""
    return f"{PREFIX}:live:open"

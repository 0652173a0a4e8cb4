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


def worker_key(worker_id: str) -> str:
    """Hash announcing one live worker (model, device); expires when it stops refreshing."""
    return f"{PREFIX}:worker:{worker_id}"


def workers_key() -> str:
    """Set of worker ids that have announced themselves."""
    return f"{PREFIX}:workers"


def queue_name(model: str, priority: Priority) -> str:
    """RQ queue for one model at one priority."""
    return f"{PREFIX}:{model}:{priority.value}"


def queue_names(model: str) -> list[str]:
    """A model's queues, highest priority first: the order a worker listens in."""
    return [queue_name(model, priority) for priority in Priority]

"""Logging: one line per event, as text or JSON, carrying the task id of the job or request at hand."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone

current_task: ContextVar[str | None] = ContextVar("current_task", default=None)


class TaskIdFilter(logging.Filter):
    """Puts the current task id (or '-') on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.task_id = current_task.get() or getattr(record, "task_id", None) or "-"
        return True


class JsonFormatter(logging.Formatter):
    """A JSON object per line: time, level, logger, task_id, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "task_id": getattr(record, "task_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Set up the root logger once for a process."""
    handler = logging.StreamHandler()
    handler.addFilter(TaskIdFilter())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(task_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

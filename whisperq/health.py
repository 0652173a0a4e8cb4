"""Container health checks, which the images' HEALTHCHECK and the Compose file run: `whisperq healthcheck api|worker`.

One word per argument, no shell: some engines split a health check's arguments on spaces.
"""

from __future__ import annotations

import time
import urllib.request

from shared.settings import Settings

# A worker's upkeep thread touches its heartbeat file every few seconds; this much silence means it is stuck.
STALE_AFTER_S = 60.0


def api_problem(settings: Settings) -> str | None:
    """Why the API in this container is not healthy; None when its /health answers 200."""
    url = f"http://127.0.0.1:{settings.api_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return None if answer.status == 200 else f"{url} answered {answer.status}"
    except (OSError, ValueError) as exc:  # refused, timed out, or an error status (HTTPError is an OSError)
        return f"{url}: {exc}"


def worker_problem(settings: Settings) -> str | None:
    """Why the worker in this container is not healthy; None while its heartbeat file is fresh."""
    if settings.heartbeat_file is None:
        return "WHISPERQ_HEARTBEAT_FILE is not set, so the worker keeps no heartbeat"
    try:
        age = time.time() - settings.heartbeat_file.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat yet at {settings.heartbeat_file}"
    return None if age <= STALE_AFTER_S else f"last heartbeat {age:.0f} s ago"

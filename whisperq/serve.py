"""How `whisperq api` runs uvicorn: on uvloop and httptools where they are installed (the `api` extra has them), in
WHISPERQ_API_PROCESSES processes sharing the port.

uvloop and httptools make each request cheaper than asyncio and h11; without them uvicorn runs on the standard pair,
only slower. Status polls are CPU-bound in Python, so a second process on a second core answers more of them.
"""

from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.main import create_app
from shared import logs
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)


def server_stack() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools where each imports, else asyncio and h11."""
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    return loop, http


def serve(settings: Settings) -> None:
    """Serve the API until a signal stops it."""
    loop, http = server_stack()
    processes = settings.api_processes
    where = f"{settings.api_host}:{settings.api_port}"
    log.info("API on %s, on %s and %s, in %d process(es)", where, loop, http, processes)
    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "loop": loop,
        "http": http,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's lines go through our handler (text or JSON)
    }
    if processes == 1:
        uvicorn.run(create_app(settings), **options)
    else:  # uvicorn starts each process afresh: it builds its app by name
        uvicorn.run("whisperq.serve:app", factory=True, workers=processes, **options)


def app() -> FastAPI:
    """The app of one of several API processes: settings from the environment, logging as the first process set it."""
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)

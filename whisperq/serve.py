"""How `whisperq api` runs uvicorn: on uvloop and httptools where they are installed (the `api` extra has them).

They make each request cheaper than asyncio and h11; without them uvicorn runs on the standard pair, only slower.
"""

from __future__ import annotations

import logging
from importlib.util import find_spec

import uvicorn

from api.main import create_app
from shared.settings import Settings

log = logging.getLogger(__name__)


def server_stack() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools where each imports, else asyncio and h11."""
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    return loop, http


def serve(settings: Settings) -> None:
    """Serve the API until a signal stops it."""
    loop, http = server_stack()
    log.info("API on %s:%d, on %s and %s", settings.api_host, settings.api_port, loop, http)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop=loop,
        http=http,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's lines go through our handler (text or JSON)
    )

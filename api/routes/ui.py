"""The web page: plain HTML, CSS and JavaScript from api/static, no build step and no CDN. `/` leads to it."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

PAGE = Path(__file__).resolve().parent.parent / "static"


def install(app: FastAPI) -> None:
    """Serve the page at /ui/ and send / there."""
    app.mount("/ui", StaticFiles(directory=PAGE, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/")

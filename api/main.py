"""The FastAPI application: `uvicorn --factory api.main:create_app`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.fastpoll import FastPolls
from api.polling import RenderCache
from api.routes import audio, docs, health, metrics, openai, realtime, sockets, tasks, ui
from shared.connection import connect, connect_async
from shared.lifecycle import Lifecycle
from shared.settings import Settings, get_settings
from shared.stores import Stores


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; its Redis client and stores are made in the lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(settings.redis_dsn, patient=False)
        app.state.redis = redis
        app.state.stores = Stores.open(redis, settings)
        app.state.lifecycle = Lifecycle(redis, app.state.stores, settings.keep_uploads)
        # Live sessions wait on their streams without holding a thread each.
        app.state.live_redis = connect_async(settings.redis_dsn)
        # What start-up built lives as long as the process: kept out of the cyclic collector's full passes, which
        # otherwise walk the whole app every few thousand requests and stall every answer behind them.
        gc.freeze()
        yield
        await app.state.live_redis.aclose()
        redis.close()

    app = FastAPI(
        title="whisperq",
        summary="Speech-to-text jobs on Whisper. / 基于 Whisper 的语音转写任务服务。",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by api.routes.docs, with their assets, so that they open without internet
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.renders = RenderCache()
    install_error_handlers(app)
    app.add_middleware(FastPolls)
    app.include_router(health.router)
    app.include_router(tasks.router)
    app.include_router(sockets.router)
    app.include_router(realtime.router)
    app.include_router(audio.router)
    app.include_router(openai.router)
    app.include_router(metrics.router)
    docs.install(app)
    ui.install(app)
    return app

"""Serving the app with uvicorn inside the daemon's TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import uvicorn

from streamd.api.app import create_app
from streamd.api.state import ApiState

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    # The daemon owns SIGTERM/SIGINT; uvicorn must not install its own handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve_api(state: ApiState) -> None:
    cfg = state.config.api
    if warning := cfg.exposure_warning():
        log.warning("%s", warning)
    config = uvicorn.Config(
        create_app(state), host=cfg.host, port=cfg.port, log_level="warning", lifespan="on"
    )
    server = _Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # uvicorn's own graceful path: finish in-flight requests, run the lifespan shutdown
        server.should_exit = True
        await asyncio.wait([task], timeout=2.0)
        raise

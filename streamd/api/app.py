"""The HTTP app: one router per concern, state through the lifespan, CORS by Starlette.

- Each router declares the token dependency itself (`state.Authorized`); the WHIP preflight and
  OPTIONS, and the publish page, are the only routes without it.
- /openapi.json and /docs are routes of their own behind the token: the schema tells a visitor
  every route and parameter, which is no business of an unauthenticated one.
- CORS: /api/whip/ allows any origin (a page elsewhere publishes with a bearer token; no cookies
  are involved); the rest of the API allows `api.cors_origins` (default none: same-origin only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from streamd.api import cameras, events, metrics, rules, search, whip
from streamd.api.errors import install_handlers
from streamd.api.state import ApiState, Authorized
from streamd.api.web import publish_mount
from streamd.rules.resolve import default_resolver

OPENAPI_URL = "/openapi.json"


class PathScopedCors:
    """Sends /api/whip/ requests through one CORSMiddleware and the rest through another (or
    none): Starlette's CORS logic, with a policy per route group."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.whip = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Link"],
            max_age=600,
        )
        self.rest = (
            CORSMiddleware(
                app,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
            )
            if origins
            else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(whip.WHIP_PREFIX):
            await self.whip(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(state: ApiState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Rules posted at run time may need MiniLM for an unknown word: start loading it now,
        # without holding the server back (the daemon has usually loaded it already).
        warming = asyncio.get_running_loop().run_in_executor(None, default_resolver().warm)
        yield {"streamd": state}
        await warming

    app = FastAPI(
        title="streamd",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
    )
    install_handlers(app)
    for module in (events, rules, search, cameras, whip, metrics):
        app.include_router(module.router)

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=Authorized)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=Authorized)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title="streamd API")

    app.router.routes.append(publish_mount())
    app.add_middleware(PathScopedCors, origins=list(state.config.api.cors_origins))
    return app

"""What every router shares: the daemon objects (through the lifespan state) and the token check."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request

from streamd.config import Config
from streamd.events.store import EventStore
from streamd.metrics import Metrics
from streamd.pipeline import CameraPipeline
from streamd.rules.manager import RuleManager
from streamd.rules.plan import Plan

if TYPE_CHECKING:
    from streamd.window.search import WindowSearch  # imports torch: only for typing here


@dataclass
class ApiState:
    config: Config
    store: EventStore
    pipelines: dict[str, CameraPipeline]
    plans: dict[str, Plan]
    metrics: Metrics | None = None  # None: cameras and SQL counts only
    search: WindowSearch | None = None  # None: the token window is disabled
    rules: RuleManager | None = None  # None: rules are read-only (tests, tools)
    reload: Callable[[], Awaitable[dict[str, list[str]]]] | None = None  # re-read the file
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule → last verdict
    # With instances sharing a database: the cameras analysed here now, and every camera's
    # lease holder (None: one instance alone, every camera is local).
    running: Mapping[str, CameraPipeline] | None = None
    holders: Callable[[], Awaitable[Mapping[str, str]]] | None = None


def get_state(request: Request) -> ApiState:
    state: ApiState = request.state.streamd
    return state


def require_token(request: Request) -> None:
    token = get_state(request).config.api.token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


State = Annotated[ApiState, Depends(get_state)]
Authorized = [Depends(require_token)]

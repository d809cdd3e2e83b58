"""HTTP API (FastAPI): events, snapshots, cameras, rules, metrics.

The app gets the daemon's objects through its lifespan state (`request.state`), never through
module globals, so tests can build an app around any store.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response

from streamd.config import Config, RuleConfig
from streamd.errors import QueryError, RuleCompileError
from streamd.events.store import EventStore
from streamd.metrics import CONTENT_TYPE_LATEST, Metrics
from streamd.pipeline import CameraPipeline
from streamd.rules.manager import RuleConflict, RuleManager, UnknownRule
from streamd.rules.plan import Plan
from streamd.timeparse import parse_time
from streamd.whip_api import install_whip
from streamd.window.moments import Moment
from streamd.window.query import MAX_LIMIT, UnknownCameraError, result_json

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


def _state(request: Request) -> ApiState:
    state: ApiState = request.state.streamd
    return state


def _auth(request: Request) -> None:
    token = _state(request).config.api.token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


State = Annotated[ApiState, Depends(_state)]


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(400, f"{name}: {exc}") from exc


def create_app(state: ApiState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"streamd": state}

    app = FastAPI(title="streamd", lifespan=lifespan, dependencies=[Depends(_auth)])
    install_whip(app)  # POST/DELETE /api/whip/..., their CORS, GET /publish/{camera}

    @app.get("/api/events")
    async def list_events(
        st: State,
        camera: str | None = None,
        rule: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        if camera is not None and camera not in st.config.cameras:
            raise HTTPException(404, f"unknown camera {camera!r}")
        s, u = _parse_time(since, "since"), _parse_time(until, "until")
        if s and u and s > u:
            raise HTTPException(400, "since is after until")
        rows = await st.store.query(camera=camera, rule=rule, since=s, until=u, limit=limit)
        return [r.to_json_dict() for r in rows]

    @app.get("/api/events/{event_id}")
    async def get_event(st: State, event_id: str) -> dict[str, Any]:
        rec = await st.store.get(event_id)
        if rec is None:
            raise HTTPException(404, f"no event {event_id!r}")
        return rec.to_json_dict()

    @app.get("/api/events/{event_id}/snapshot.jpg", response_model=None)
    async def snapshot(st: State, event_id: str) -> FileResponse:
        rec = await st.store.get(event_id)
        if rec is None:
            raise HTTPException(404, f"no event {event_id!r}")
        path = rec.snapshot_path
        if path is not None and not path.is_absolute():
            path = st.store.snapshot_dir / path
        if path is None or not path.is_file():
            raise HTTPException(404, f"event {event_id!r} has no snapshot")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/api/cameras")
    async def cameras(st: State) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, p in st.pipelines.items():
            cam = p.camera
            out[name] = {
                "source": cam.spec.display,
                "online": cam.health.online,
                "fps": p.config.fps,
                "width": cam.stats.width,
                "height": cam.stats.height,
                "decoded_frames": cam.stats.decoded,
                "sampled_frames": cam.stats.sampled,
                "dropped_frames": cam.dropped,
                "analysed_frames": p.analyser.stats.analysed,
                "gated_frames": p.analyser.stats.gated,
                "reconnects": cam.health.reconnects,
                "last_error": cam.stats.last_error or None,
                "rules": [r.name for r, _ in p.rules],
                "window": p.window.describe() if p.window is not None else None,
            }
        return out

    def _searcher(st: ApiState) -> WindowSearch:
        if st.search is None:
            raise HTTPException(503, "the token window is disabled (window.enabled: false)")
        return st.search

    @app.get("/api/search")
    async def search(
        st: State,
        q: str | None = None,
        camera: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10,
        min_score: float | None = None,
    ) -> dict[str, Any]:
        """Moments of the cameras' token windows that match the text `q`, best first."""
        searcher = _searcher(st)
        s, u = _parse_time(since, "since"), _parse_time(until, "until")
        try:
            result = await asyncio.to_thread(
                searcher.search,
                q or "",
                camera,
                s.timestamp() if s else None,
                u.timestamp() if u else None,
                limit,
                min_score,
            )
        except UnknownCameraError as exc:
            raise HTTPException(404, str(exc)) from exc
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from exc

        def snapshot_url(m: Moment) -> str | None:
            if m.camera is None or searcher.snapshot_path(m.camera, m.frame_id) is None:
                return None
            return f"/api/search/snapshot/{m.camera}/{m.frame_id}.jpg"

        return result_json(result, snapshot_url)

    @app.get("/api/search/snapshot/{camera}/{frame_id}.jpg", response_model=None)
    async def search_snapshot(st: State, camera: str, frame_id: int) -> FileResponse:
        try:
            path = _searcher(st).snapshot_path(camera, frame_id)
        except UnknownCameraError as exc:
            raise HTTPException(404, str(exc)) from exc
        if path is None:
            raise HTTPException(404, f"no snapshot of frame {frame_id} (evicted, or none kept)")
        return FileResponse(path, media_type="image/jpeg")

    def rule_json(rule: RuleConfig, plan: Plan, source: str) -> dict[str, Any]:
        return {
            "name": rule.name,
            "text": rule.text,
            "cameras": rule.cameras,
            "plan": plan.describe(),
            "cooldown_s": rule.cooldown_s,
            "clear_s": rule.clear_s,
            "severity": rule.severity,
            "source": source,
        }

    @app.get("/api/rules")
    async def rules(st: State) -> list[dict[str, Any]]:
        if st.rules is not None:
            return [rule_json(r, p, src) for r, p, src in st.rules.all()]
        return [rule_json(r, st.plans[r.name], "config") for r in st.config.rules]

    def manager(st: ApiState) -> RuleManager:
        if st.rules is None:
            raise HTTPException(503, "rules cannot be changed on this server")
        return st.rules

    @app.post("/api/rules", status_code=201)
    async def add_rule(st: State, rule: RuleConfig) -> dict[str, Any]:
        """Add a rule while running; it is stored and survives restarts."""
        try:
            plan = await manager(st).add(rule)
        except RuleCompileError as exc:
            raise HTTPException(400, str(exc)) from exc
        except RuleConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except UnknownRule as exc:
            raise HTTPException(400, str(exc)) from exc
        return rule_json(rule, plan, "api")

    @app.delete("/api/rules/{name}", status_code=204)
    async def delete_rule(st: State, name: str) -> None:
        """Remove a rule added through the API (its open events end now)."""
        try:
            await manager(st).remove(name)
        except RuleConflict as exc:
            raise HTTPException(409, str(exc)) from exc
        except UnknownRule as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(st: State) -> Response:
        """Prometheus text format (prometheus_client): cameras, events (from SQL), MQTT, ops."""
        source = st.metrics or Metrics(st.store, st.pipelines)
        return Response(await source.render(), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    # The daemon owns SIGTERM/SIGINT; uvicorn must not install its own handlers.
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve_api(state: ApiState) -> None:
    cfg = state.config.api
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

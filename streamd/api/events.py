"""GET /api/events, /api/events/{id} and the event's snapshot."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse

from streamd.api.errors import responses
from streamd.api.params import CameraQuery, EventId, RuleQuery, SinceQuery, UntilQuery
from streamd.api.state import Authorized, State
from streamd.errors import QueryError
from streamd.timeparse import parse_time

router = APIRouter(tags=["events"], dependencies=Authorized)


def parse_time_param(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise HTTPException(400, f"{name}: {exc}") from exc


@router.get(
    "/api/events",
    summary="Event history, newest first",
    responses=responses(400, 404, 503, e404="Unknown camera"),
)
async def list_events(
    st: State,
    camera: CameraQuery = None,
    rule: RuleQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
) -> list[dict[str, Any]]:
    if camera is not None and camera not in st.config.cameras:
        raise HTTPException(404, f"unknown camera {camera!r}")
    s, u = parse_time_param(since, "since"), parse_time_param(until, "until")
    if s and u and s > u:
        raise HTTPException(400, "since is after until")
    try:
        rows = await st.store.query(camera=camera, rule=rule, since=s, until=u, limit=limit)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from exc
    return [r.to_json_dict() for r in rows]


@router.get(
    "/api/events/{event_id}", summary="One event", responses=responses(404, 503, e404="No event")
)
async def get_event(st: State, event_id: EventId) -> dict[str, Any]:
    rec = await st.store.get(event_id)
    if rec is None:
        raise HTTPException(404, f"no event {event_id!r}")
    return rec.to_json_dict()


@router.get(
    "/api/events/{event_id}/snapshot.jpg",
    summary="The event's snapshot (JPEG, boxes drawn)",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The JPEG"},
        **responses(404, 503, e404="No event, or the event has no snapshot"),
    },
)
async def snapshot(st: State, event_id: EventId) -> FileResponse:
    rec = await st.store.get(event_id)
    if rec is None:
        raise HTTPException(404, f"no event {event_id!r}")
    # The store resolves the path against its snapshot directory already; joining it again
    # doubled a relative data_dir ("streamd-data/snapshots/streamd-data/snapshots/...").
    path = rec.snapshot_path
    if path is None or not path.is_file():
        raise HTTPException(404, f"event {event_id!r} has no snapshot")
    return FileResponse(path, media_type="image/jpeg")

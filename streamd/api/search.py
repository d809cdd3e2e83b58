"""GET /api/search: moments of the token windows matching a text, and their snapshots."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse

from streamd.api.errors import responses
from streamd.api.events import parse_time_param
from streamd.api.params import CameraPath, CameraQuery, SinceQuery, UntilQuery
from streamd.api.state import ApiState, Authorized, State
from streamd.errors import QueryError
from streamd.window.moments import Moment
from streamd.window.query import MAX_LIMIT, UnknownCameraError, result_json

if TYPE_CHECKING:
    from streamd.window.search import WindowSearch

router = APIRouter(tags=["search"], dependencies=Authorized)


def _searcher(st: ApiState) -> WindowSearch:
    if st.search is None:
        raise HTTPException(503, "the token window is disabled (window.enabled: false)")
    return st.search


@router.get(
    "/api/search",
    summary="Moments of the cameras' token windows that match the text `q`, best first",
    responses=responses(400, 404, 503, e404="Unknown camera", e503="The token window is disabled"),
)
async def search(
    st: State,
    q: Annotated[str | None, Query(description="What to look for (at most 500 characters).")] = (
        None
    ),
    camera: CameraQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many.")] = 10,
    min_score: Annotated[
        float | None, Query(allow_inf_nan=False, description="Drop moments scoring below this.")
    ] = None,
) -> dict[str, Any]:
    searcher = _searcher(st)
    s, u = parse_time_param(since, "since"), parse_time_param(until, "until")
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


@router.get(
    "/api/search/snapshot/{camera}/{frame_id}.jpg",
    summary="The thumbnail kept for one tokenised frame",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The JPEG"},
        **responses(
            404, 503, e404="Unknown camera, or no thumbnail of that frame (evicted, or none kept)"
        ),
    },
)
async def search_snapshot(
    st: State,
    camera: CameraPath,
    frame_id: Annotated[int, Path(ge=0, le=2**53, description="Frame id from a search result.")],
) -> FileResponse:
    try:
        path = _searcher(st).snapshot_path(camera, frame_id)
    except UnknownCameraError as exc:
        raise HTTPException(404, str(exc)) from exc
    if path is None:
        raise HTTPException(404, f"no snapshot of frame {frame_id} (evicted, or none kept)")
    return FileResponse(path, media_type="image/jpeg")

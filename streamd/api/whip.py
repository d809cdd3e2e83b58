"""WHIP ingest (RFC 9725) on the daemon's HTTP API.

- `POST /api/whip/{camera}`: an `application/sdp` offer → `201 Created`, the SDP answer, and
  `Location: /api/whip/{camera}/{session}`. Non-trickle: the answer carries every candidate.
- `DELETE /api/whip/{camera}/{session}` ends the session; the camera goes offline.
- `OPTIONS /api/whip/{camera}` answers `Accept-Post: application/sdp`; CORS for /api/whip/ (any
  origin: a page elsewhere publishes with a bearer token, no cookies) is Starlette's
  CORSMiddleware, scoped to this prefix in `app.py`.

Errors are 400 (malformed SDP), 401 (token), 404 (unknown or non-WHIP camera, unknown session),
409 (the camera already has a publisher, or another instance of a cluster holds its lease:
the detail names it), 413 (oversized offer), 415 (not application/sdp) and 503 (the lease table
is unreachable), each with a `detail` that says what to fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import Response

from streamd.api.errors import RETRY_AFTER_S, responses
from streamd.api.params import CameraPath
from streamd.api.state import Authorized, get_state
from streamd.ingest.webrtc.whip import BadOffer, WhipBusy, WhipSource

if TYPE_CHECKING:
    from streamd.config import IceServerConfig

MAX_OFFER_BYTES = 64 * 1024
WHIP_PREFIX = "/api/whip/"
SessionId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_-]{1,128}$", description="Session id from Location.")
]

router = APIRouter(tags=["webrtc"])


def _whip_source(request: Request, camera: str) -> WhipSource:
    pipeline = get_state(request).pipelines.get(camera)
    if pipeline is None:
        raise HTTPException(404, f"unknown camera {camera!r}")
    source = pipeline.camera
    if not isinstance(source, WhipSource):
        raise HTTPException(
            404, f"camera {camera!r} does not take WHIP publishers (configure it `webrtc: whip`)"
        )
    return source


async def _analysed_here(request: Request, camera: str) -> None:
    """With instances sharing the cameras, only the lease holder analyses a camera: a
    publisher sent elsewhere (a load balancer, a stale address after a failover) is told
    where to go instead of streaming into a camera nobody here analyses."""
    st = get_state(request)
    if st.running is None or camera in st.running:
        return
    # A lease table outage answers 503 (the app's database error handler), as GET /api/cameras.
    holder = (await st.holders()).get(camera) if st.holders is not None else None
    me = st.config.instance.name
    if holder is not None:
        raise HTTPException(
            409,
            f"camera {camera!r} is analysed by instance {holder!r}, not this one ({me!r}): "
            "publish to that instance",
        )
    raise HTTPException(
        409,
        f"camera {camera!r} is not analysed by any instance yet (its lease is free): "
        f"retry in {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _link_header(servers: list[IceServerConfig]) -> str:
    """ICE servers as RFC 9725 §4.6 Link headers (one comma-separated field)."""
    links = []
    for s in servers:
        for url in s.urls:
            link = f'<{url}>; rel="ice-server"'
            if s.username is not None and s.credential is not None:
                link += (
                    f'; username="{s.username}"; credential="{s.credential.get_secret_value()}"'
                    '; credential-type="password"'
                )
            links.append(link)
    return ", ".join(links)


async def _read_offer(request: Request) -> str:
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/sdp":
        raise HTTPException(
            415,
            f"a WHIP offer must be sent with Content-Type: application/sdp, not {ctype or 'none'}",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise HTTPException(413, f"SDP offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"malformed SDP offer: not UTF-8 ({exc.reason})") from exc


@router.post(
    "/api/whip/{camera}",
    status_code=201,
    response_class=Response,
    summary="Publish video to a WHIP camera (RFC 9725)",
    dependencies=Authorized,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/sdp": {"schema": {"type": "string"}}},
        }
    },
    responses={
        201: {"content": {"application/sdp": {}}, "description": "SDP answer; Location header"},
        **responses(
            400,
            404,
            409,
            413,
            415,
            503,
            e400="Malformed SDP offer",
            e404="Unknown camera, or not a WHIP camera",
            e409="The camera already has a publisher, or another instance analyses it",
            e503="The lease table (instances sharing a database) is unreachable",
            e415="Content-Type is not application/sdp",
        ),
    },
)
async def whip_publish(request: Request, camera: CameraPath) -> Response:
    source = _whip_source(request, camera)
    await _analysed_here(request, camera)
    offer = await _read_offer(request)
    try:
        answer = await source.publish(offer)
    except BadOffer as exc:
        raise HTTPException(400, f"malformed SDP offer: {exc}") from exc
    except WhipBusy as exc:
        raise HTTPException(409, str(exc)) from exc
    headers = {"Location": f"{WHIP_PREFIX}{camera}/{answer.session_id}"}
    if links := _link_header(get_state(request).config.webrtc.ice_servers):
        headers["Link"] = links
    return Response(answer.sdp, status_code=201, media_type="application/sdp", headers=headers)


@router.options(
    "/api/whip/{camera}",
    status_code=204,
    response_class=Response,
    summary="What a WHIP endpoint accepts (no token needed)",
    responses={204: {"description": "Accept-Post: application/sdp"}},
)
async def whip_options(camera: CameraPath) -> Response:
    del camera  # the answer is the same for every camera; no state is revealed
    return Response(
        status_code=204, headers={"Accept-Post": "application/sdp", "Allow": "POST, OPTIONS"}
    )


@router.delete(
    "/api/whip/{camera}/{session}",
    response_class=Response,
    summary="End a WHIP session",
    dependencies=Authorized,
    responses={
        200: {"description": "Session ended"},
        **responses(404, e404="Unknown camera or session"),
    },
)
async def whip_stop(request: Request, camera: CameraPath, session: SessionId) -> Response:
    source = _whip_source(request, camera)
    if not await source.stop_session(session):
        raise HTTPException(404, f"no WHIP session {session!r} on camera {camera!r}")
    return Response(status_code=200)

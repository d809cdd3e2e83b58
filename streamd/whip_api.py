"""WHIP ingest (RFC 9725) on the daemon's HTTP API, and a small browser publish page.

- `POST /api/whip/{camera}`: an `application/sdp` offer → `201 Created`, the SDP answer, and
  `Location: /api/whip/{camera}/{session}`. Non-trickle: the answer carries every candidate.
- `DELETE /api/whip/{camera}/{session}` ends the session; the camera goes offline.
- `OPTIONS` and CORS on /api/whip/ only, so a page on another origin can publish with a bearer
  token (no cookies are involved, hence `*`); the rest of the API keeps its same-origin policy.
- `GET /publish/{camera}`: a page that turns the browser's webcam into that camera. It is a
  static page and carries no secret, so it is served without the API token (a browser cannot
  send one when navigating); the page asks for the token and sends it with its WHIP requests.

Errors are 400 (malformed SDP), 401 (token, from the API's auth), 404 (unknown or non-WHIP
camera, unknown session), 409 (the camera already has a publisher), 413 (oversized offer) and
415 (not application/sdp), each with a `detail` that says what to fix.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamd.ingest.webrtc import BadOffer, WhipBusy, WhipSource

if TYPE_CHECKING:
    from streamd.api import ApiState
    from streamd.config import IceServerConfig

MAX_OFFER_BYTES = 64 * 1024
WHIP_PREFIX = "/api/whip/"

router = APIRouter(tags=["webrtc"])


def _api_state(request: Request) -> ApiState:
    state: ApiState = request.state.streamd
    return state


def _whip_source(request: Request, camera: str) -> WhipSource:
    pipeline = _api_state(request).pipelines.get(camera)
    if pipeline is None:
        raise HTTPException(404, f"unknown camera {camera!r}")
    source = pipeline.camera
    if not isinstance(source, WhipSource):
        raise HTTPException(
            404, f"camera {camera!r} does not take WHIP publishers (configure it `webrtc: whip`)"
        )
    return source


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
    responses={
        201: {"content": {"application/sdp": {}}, "description": "SDP answer; Location header"},
        400: {"description": "Malformed SDP offer"},
        404: {"description": "Unknown camera, or not a WHIP camera"},
        409: {"description": "The camera already has a publisher"},
        415: {"description": "Content-Type is not application/sdp"},
    },
)
async def whip_publish(request: Request, camera: str) -> Response:
    source = _whip_source(request, camera)
    offer = await _read_offer(request)
    try:
        answer = await source.publish(offer)
    except BadOffer as exc:
        raise HTTPException(400, f"malformed SDP offer: {exc}") from exc
    except WhipBusy as exc:
        raise HTTPException(409, str(exc)) from exc
    headers = {"Location": f"{WHIP_PREFIX}{camera}/{answer.session_id}"}
    if links := _link_header(_api_state(request).config.webrtc.ice_servers):
        headers["Link"] = links
    return Response(answer.sdp, status_code=201, media_type="application/sdp", headers=headers)


@router.delete(
    "/api/whip/{camera}/{session}",
    response_class=Response,
    summary="End a WHIP session",
    responses={404: {"description": "Unknown camera or session"}},
)
async def whip_stop(request: Request, camera: str, session: str) -> Response:
    source = _whip_source(request, camera)
    if not await source.stop_session(session):
        raise HTTPException(404, f"no WHIP session {session!r} on camera {camera!r}")
    return Response(status_code=200)


_PREFLIGHT = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location, Link",
    "Access-Control-Max-Age": "600",
    "Accept-Post": "application/sdp",
    "Allow": "POST, DELETE, OPTIONS",
}


class WhipCors:
    """CORS for /api/whip/ only: answers preflights (before auth: browsers send no token on
    them) and lets a cross-origin page read every WHIP response, errors and Location included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(WHIP_PREFIX):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers=_PREFLIGHT)(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Access-Control-Allow-Origin"] = "*"
                headers["Access-Control-Expose-Headers"] = "Location, Link"
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def publish_page(request: Request) -> Response:
    camera = request.path_params["camera"]
    pipeline = _api_state(request).pipelines.get(camera)
    if pipeline is None or not isinstance(pipeline.camera, WhipSource):
        return PlainTextResponse(f"no WHIP camera {camera!r}", status_code=404)
    # Only servers without credentials: the page is public, TURN passwords are not.
    ice = [
        {"urls": s.urls} for s in _api_state(request).config.webrtc.ice_servers if not s.username
    ]
    settings = {"camera": camera, "whip": f"{WHIP_PREFIX}{camera}", "iceServers": ice}
    page = _PAGE.replace("__TITLE__", html.escape(camera)).replace(
        "__SETTINGS__", json.dumps(settings).replace("<", "\\u003c")
    )
    return HTMLResponse(
        page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def install_whip(app: FastAPI) -> None:
    """Add the WHIP endpoints, their CORS and the publish page to the API app."""
    app.include_router(router)
    app.add_middleware(WhipCors)
    # Mounted, not routed through FastAPI: the app-wide token dependency must not guard a page
    # a browser navigates to.
    app.mount("/publish", Router(routes=[Route("/{camera}", publish_page, methods=["GET"])]))


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>streamd · publish __TITLE__</title>
<style>
  body { font: 16px system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; padding: 0 1rem; }
  video { width: 100%; background: #111; border-radius: 6px; aspect-ratio: 16 / 9; }
  .row { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; margin: 1rem 0; }
  #status { font-family: monospace; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>Publish this camera to streamd: <code>__TITLE__</code></h1>
<video id="preview" autoplay muted playsinline></video>
<div class="row">
  <label>API token <input id="token" type="password" autocomplete="off" size="24"></label>
  <button id="start">Start</button>
  <button id="stop" disabled>Stop</button>
</div>
<p>Status: <span id="status">idle</span></p>
<p><small>The video goes to streamd over WebRTC (WHIP). The token is only needed when the
daemon has one; it can also be given as <code>#token=…</code> in the address.</small></p>
<script>
"use strict";
const SETTINGS = __SETTINGS__;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("token")) $("token").value = params.get("token");
let pc = null, stream = null, resource = null;

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  document.title = "streamd · " + text;
  console.log("streamd publish: " + text);
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { "Authorization": "Bearer " + token } : {};
}

function gatheringComplete(peer, timeoutMs) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { peer.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (peer.iceGatheringState === "complete") done(); };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);  // publish with the candidates found so far
  });
}

async function start() {
  $("start").disabled = true;
  try {
    status("asking for the camera");
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
    $("preview").srcObject = stream;
    pc = new RTCPeerConnection({ iceServers: SETTINGS.iceServers });
    pc.addEventListener("connectionstatechange", () => {
      status("connection " + pc.connectionState, pc.connectionState === "failed");
    });
    for (const track of stream.getVideoTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    await pc.setLocalDescription(await pc.createOffer());
    status("gathering network candidates");
    await gatheringComplete(pc, 5000);
    status("sending offer");
    const resp = await fetch(SETTINGS.whip, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", ...authHeaders() },
      body: pc.localDescription.sdp,
    });
    const body = await resp.text();
    if (resp.status !== 201) {
      let detail = body;
      try { detail = JSON.parse(body).detail; } catch (e) { /* plain text */ }
      throw new Error("streamd answered " + resp.status + ": " + detail);
    }
    resource = new URL(resp.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    status("connecting");
    $("stop").disabled = false;
  } catch (err) {
    status(String(err.message || err), true);
    teardown(false);
    $("start").disabled = false;
  }
}

function teardown(sendDelete) {
  if (sendDelete && resource) {
    // keepalive: the DELETE still goes out when the tab is closing
    fetch(resource, { method: "DELETE", headers: authHeaders(), keepalive: true }).catch(() => {});
  }
  resource = null;
  if (pc) { pc.close(); pc = null; }
  if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => {
  teardown(true);
  status("stopped");
  $("stop").disabled = true;
  $("start").disabled = false;
});
window.addEventListener("pagehide", () => teardown(true));
if (new URLSearchParams(location.search).get("autostart") === "1") start();
</script>
</body>
</html>
"""

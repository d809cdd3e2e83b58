"""GET /publish/{camera}: a page that turns the browser's webcam into a WHIP camera.

It is a static page and carries no secret, so it is served without the API token (a browser
cannot send one when navigating); the page asks for the token and sends it with its WHIP requests.
It is mounted outside FastAPI's routing, so the routers' token dependency never guards it.
"""

from __future__ import annotations

import html
import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from streamd.api.state import get_state
from streamd.api.whip import WHIP_PREFIX
from streamd.ingest.webrtc.whip import WhipSource


async def publish_page(request: Request) -> Response:
    camera = request.path_params["camera"]
    pipeline = get_state(request).pipelines.get(camera)
    if pipeline is None or not isinstance(pipeline.camera, WhipSource):
        return PlainTextResponse(f"no WHIP camera {camera!r}", status_code=404)
    # Only servers without credentials: the page is public, TURN passwords are not.
    ice = [{"urls": s.urls} for s in get_state(request).config.webrtc.ice_servers if not s.username]
    settings = {"camera": camera, "whip": f"{WHIP_PREFIX}{camera}", "iceServers": ice}
    page = _PAGE.replace("__TITLE__", html.escape(camera)).replace(
        "__SETTINGS__", json.dumps(settings).replace("<", "\\u003c")
    )
    return HTMLResponse(
        page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def publish_mount() -> Mount:
    return Mount("/publish", routes=[Route("/{camera}", publish_page, methods=["GET"])])


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

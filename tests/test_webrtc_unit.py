"""WebRTC pieces that need no network namespace: config, the drain loop, the WHIP HTTP surface.

The HTTP tests drive the real FastAPI app in-process (httpx ASGI transport) with real daemon
objects; a publish with a real aiortc offer works here too because it only needs ICE gathering,
not connectivity. Real peers streaming over ICE are in test_webrtc.py (inside `unshare -n`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from streamd.api import ApiState, create_app
from streamd.config import parse_config
from streamd.errors import ConfigError
from streamd.events.db import make_engine
from streamd.events.store import EventStore
from streamd.ingest.webrtc.session import WebRtcSpec, rtc_configuration
from streamd.ingest.webrtc.whep import WhepSource
from streamd.ingest.webrtc.whip import WhipSource
from streamd.pipeline import CameraPipeline

TOKEN = "t0ken"

# ---------------------------------------------------------------------------------------------
# config


def test_webrtc_cameras_and_ice_servers_parse() -> None:
    cfg = parse_config(
        """
webrtc:
  ice_servers:
    - {urls: "stun:stun.example.net:3478"}
    - {urls: ["turn:turn.example.net:3478?transport=udp"], username: u, credential: pw}
cameras:
  door: {webrtc: whip, fps: 2}
  gate: {webrtc: {whep: "https://go2rtc.local:1984/api/webrtc?src=gate", token: abc}}
"""
    )
    assert cfg.cameras["door"].webrtc == "whip"
    gate = cfg.cameras["gate"].webrtc
    assert not isinstance(gate, str)
    assert gate is not None
    assert gate.whep.startswith("https://")
    rtc = rtc_configuration(cfg.webrtc.ice_servers)
    assert rtc.iceServers is not None
    assert [s.urls for s in rtc.iceServers] == [
        ["stun:stun.example.net:3478"],
        ["turn:turn.example.net:3478?transport=udp"],
    ]
    assert rtc.iceServers[1].credential == "pw"


def test_no_ice_servers_means_none_not_aiortcs_public_default() -> None:
    rtc = rtc_configuration([])
    assert rtc.iceServers == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cameras: {d: {webrtc: whep}}", "cameras.d.webrtc: Input should be 'whip'"),
        (
            "cameras: {d: {webrtc: whip, url: 'rtsp://h/x'}}",
            "exactly one source: url, file, demo or webrtc",
        ),
        ("cameras: {d: {webrtc: {whep: 'ftp://h/x'}}}", "whep must be an http:// or https://"),
        ("cameras: {d: {webrtc: {whep: 'http://h/x', bogus: 1}}}", "bogus: unknown key"),
        ("webrtc: {ice_servers: [{urls: 'http://h'}]}", "invalid ICE server URL 'http://h'"),
        ("webrtc: {ice_servers: [{urls: 'turn:h:3478'}]}", "needs username and credential"),
        ("webrtc: {stun: 'stun:h'}", "webrtc.stun: unknown key"),
    ],
)
def test_bad_webrtc_config_names_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert expected in str(err.value)


def test_whep_display_hides_credentials() -> None:
    spec = WebRtcSpec("cam", whep_url="http://user:secret@h:8889/cam/whep")
    assert "secret" not in spec.display
    assert WebRtcSpec("door").display == "WHIP POST /api/whip/door"
    with pytest.raises(ValueError, match="whep_url"):
        WhepSource(WebRtcSpec("x"))


# ---------------------------------------------------------------------------------------------
# the drain loop: aiortc's track queue is unbounded, ours must keep it empty


class FakeTrack(MediaStreamTrack):
    """What aiortc's RemoteStreamTrack is: an unbounded asyncio.Queue behind recv()."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.VideoFrame | None] = asyncio.Queue()
        self.max_backlog = 0

    def push(self, frame: av.VideoFrame | None) -> None:
        self.queue.put_nowait(frame)
        self.max_backlog = max(self.max_backlog, self.queue.qsize())

    async def recv(self) -> av.VideoFrame:
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class FakeSession:
    def __init__(self) -> None:
        self.frames = 0
        self.last_frame = 0.0
        self.reason = ""

    def end(self, reason: str) -> None:
        self.reason = reason


def _video_frame(i: int) -> av.VideoFrame:
    img = np.full((120, 160, 3), i % 256, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
    frame.pts = i * 3000  # 30 fps on the 90 kHz RTP clock, as aiortc stamps it
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


async def test_slow_consumer_never_grows_the_track_queue() -> None:
    source = WhipSource(WebRtcSpec("door", fps=5.0))
    track, session = FakeTrack(), FakeSession()
    drain = asyncio.create_task(source._drain(session, track))  # type: ignore[arg-type]
    got = []

    async def slow_analyser() -> None:
        async for frame in source.frames():
            got.append(frame)
            await asyncio.sleep(0.4)  # far slower than the 5 fps asked for

    consumer = asyncio.create_task(slow_analyser())
    for i in range(90):  # 3 s of a 30 fps camera
        track.push(_video_frame(i))
        await asyncio.sleep(1 / 30)
    track.push(None)
    await asyncio.wait_for(drain, 5)
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer

    assert session.reason == "track ended"
    assert track.max_backlog <= 2, "the recv loop fell behind aiortc's queue"
    assert source.stats.decoded == 90
    assert 12 <= source.stats.sampled <= 17  # ≈5 fps over 3 s
    assert len(got) <= 9  # the analyser took what it could…
    assert source.dropped >= source.stats.sampled - len(got) - 1  # …the rest was dropped, counted
    first = got[0]
    assert first.camera == "door"
    assert first.image.shape == (120, 160, 3)
    assert first.pts is not None
    assert abs(first.received_at - time.time()) < 10
    assert [f.seq for f in got] == sorted(f.seq for f in got)


async def test_burst_backlog_is_drained_without_converting_every_frame() -> None:
    """A loop stall lets aiortc queue hundreds of frames; they are pulled, not converted."""
    source = WhipSource(WebRtcSpec("door", fps=1.0))
    track, session = FakeTrack(), FakeSession()
    for i in range(300):
        track.push(_video_frame(i))
    track.push(None)
    await asyncio.wait_for(source._drain(session, track), 5)  # type: ignore[arg-type]
    assert track.queue.qsize() == 0
    assert source.stats.decoded == source.stats.demuxed == 300  # aiortc decodes all it receives
    assert source.stats.sampled <= 2  # everything arrived "now": one sampling slot


# ---------------------------------------------------------------------------------------------
# the WHIP HTTP surface, in-process


def _with_state(app: Any, state: ApiState) -> Any:
    """The lifespan state uvicorn would give each request (httpx's ASGI transport runs none)."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app({**scope, "state": {"streamd": state}}, receive, send)

    return asgi


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ApiState]]:
    cfg = parse_config(
        f"""
api: {{token: {TOKEN}}}
cameras:
  door: {{webrtc: whip, fps: 2}}
  yard: {{demo: true}}
rules:
  - {{name: person, text: "alert when a person is present"}}
"""
    )
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")

    async def sink(_: object) -> None:
        return None

    pipelines = {
        name: CameraPipeline(name, cam, [], None, sink, webrtc=cfg.webrtc)
        for name, cam in cfg.cameras.items()
    }
    state = ApiState(cfg, EventStore(engine, tmp_path, None), pipelines, {})
    transport = httpx.ASGITransport(app=_with_state(create_app(state), state))
    async with httpx.AsyncClient(transport=transport, base_url="http://streamd") as client:
        yield client, state
    door = pipelines["door"].camera
    assert isinstance(door, WhipSource)
    if door.session_id is not None:
        await door.stop_session(door.session_id)
    await engine.dispose()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = {"Origin": "https://elsewhere.example"}  # what a browser sends cross-origin
SDP = {"Content-Type": "application/sdp", **AUTH}


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "detail"),
    [
        ("/api/whip/door", {"Content-Type": "application/sdp"}, "v=0", 401, "bearer token"),
        ("/api/whip/door", {"Content-Type": "text/plain", **AUTH}, "v=0", 415, "application/sdp"),
        ("/api/whip/door", {**AUTH}, "v=0", 415, "not none"),
        ("/api/whip/door", SDP, "hello", 400, "starts with 'v=0'"),
        ("/api/whip/door", SDP, "v=0\r\nm=audio 9 RTP/AVP 0\r\n", 400, "no video m-line"),
        ("/api/whip/door", SDP, "v=0\r\n" + "a=x\r\n" * 20000, 413, "larger than"),
        ("/api/whip/nowhere", SDP, "v=0", 404, "unknown camera 'nowhere'"),
        ("/api/whip/yard", SDP, "v=0", 404, "configure it `webrtc: whip`"),
    ],
)
async def test_whip_refusals_are_clear(
    api: tuple[httpx.AsyncClient, ApiState],
    path: str,
    headers: dict[str, str],
    body: str,
    status: int,
    detail: str,
) -> None:
    client, _ = api
    r = await client.post(path, content=body, headers={**headers, **ORIGIN})
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]
    assert r.headers["access-control-allow-origin"] == "*"  # a cross-origin page can read why


async def test_whip_publish_conflict_and_delete(api: tuple[httpx.AsyncClient, ApiState]) -> None:
    client, state = api
    pc1, offer1 = await _offer()
    pc2, offer2 = await _offer()
    try:
        r = await client.post("/api/whip/door", content=offer1, headers={**SDP, **ORIGIN})
        assert r.status_code == 201, r.text
        assert r.headers["content-type"] == "application/sdp"
        location = r.headers["location"]
        assert location.startswith("/api/whip/door/")
        assert "Location" in r.headers["access-control-expose-headers"]
        answer = RTCSessionDescription(r.text, "answer")
        assert "a=recvonly" in answer.sdp

        busy = await client.post("/api/whip/door", content=offer2, headers=SDP)
        assert busy.status_code == 409
        assert "already has a publisher" in busy.json()["detail"]

        assert (await client.delete(location)).status_code == 401
        assert (await client.delete(location, headers=AUTH)).status_code == 200
        assert not state.pipelines["door"].camera.health.online
        gone = await client.delete(location, headers=AUTH)
        assert gone.status_code == 404
        assert "no WHIP session" in gone.json()["detail"]

        again = await client.post("/api/whip/door", content=offer2, headers=SDP)
        assert again.status_code == 201, "the camera is free again after DELETE"
        await client.delete(again.headers["location"], headers=AUTH)
    finally:
        await pc1.close()
        await pc2.close()


async def test_whip_preflight_needs_no_token(api: tuple[httpx.AsyncClient, ApiState]) -> None:
    client, _ = api
    r = await client.options(
        "/api/whip/door",
        headers={
            "Origin": "https://elsewhere.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 200, r.text  # Starlette's CORSMiddleware answers preflights
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "Authorization" in r.headers["access-control-allow-headers"]
    plain = await client.options("/api/whip/door")  # RFC 9725 OPTIONS, not a preflight
    assert plain.status_code == 204
    assert plain.headers["accept-post"] == "application/sdp"


async def test_publish_page_and_the_rest_of_the_api(
    api: tuple[httpx.AsyncClient, ApiState],
) -> None:
    client, _ = api
    page = await client.get("/publish/door")  # a browser navigating sends no token
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '"/api/whip/door"' in page.text
    assert "getUserMedia" in page.text
    assert (await client.get("/publish/yard")).status_code == 404
    assert (await client.get("/publish/nowhere")).status_code == 404
    # nothing else changed: the rest of the API still wants the token, and has no CORS
    cams = await client.get("/api/cameras")
    assert cams.status_code == 401
    assert "access-control-allow-origin" not in cams.headers
    cams = await client.get("/api/cameras", headers=AUTH)
    assert cams.json()["door"]["source"] == "WHIP POST /api/whip/door"
    assert cams.json()["door"]["online"] is False
    assert (await client.options("/api/cameras", headers=AUTH)).status_code == 405
    spec = (await client.get("/openapi.json", headers=AUTH)).json()
    assert "/api/whip/{camera}" in spec["paths"]
    assert "/api/whip/{camera}/{session}" in spec["paths"]


@pytest.mark.parametrize(
    ("holders", "detail", "retry"),
    [
        ({"door": "node-b"}, "analysed by instance 'node-b'", False),
        ({}, "not analysed by any instance yet", True),
    ],
)
async def test_whip_publisher_sent_to_an_instance_without_the_lease_is_told_where_to_go(
    api: tuple[httpx.AsyncClient, ApiState],
    holders: dict[str, str],
    detail: str,
    retry: bool,
) -> None:
    """Instances sharing a database analyse a camera only where its lease is held. A WHIP
    publisher that reaches another instance (a load balancer, an address from before a
    failover) is refused with the holder's name, or told to retry while the lease is free,
    instead of streaming into a camera nobody analyses there. (The lease table itself is
    exercised against PostgreSQL in test_cluster.py; here the API's view of it is set.)"""
    client, state = api

    async def lease_holders() -> dict[str, str]:
        return holders

    state.running, state.holders = {}, lease_holders
    pc, offer = await _offer()
    try:
        r = await client.post("/api/whip/door", content=offer, headers=SDP)
        assert r.status_code == 409, r.text
        assert detail in r.json()["detail"]
        assert ("retry-after" in r.headers) is retry
        door = state.pipelines["door"].camera
        assert isinstance(door, WhipSource)
        assert door.session_id is None  # nothing was accepted
        state.running = {"door": state.pipelines["door"]}  # the lease came here
        r = await client.post("/api/whip/door", content=offer, headers=SDP)
        assert r.status_code == 201, r.text
    finally:
        await pc.close()

"""WebRTC camera sources (aiortc): WHIP, where a publisher pushes to the daemon, and WHEP, where
the daemon pulls from a server (a camera, go2rtc, MediaMTX).

Both have the face of `Camera`: `frames()` forever, `stats`, `health`, `dropped`, `spec.display`.

aiortc decodes in its own thread and puts every decoded frame on an unbounded asyncio.Queue inside
the remote track. A dedicated recv task per session pulls each frame as soon as it is there, so
that queue never grows however slow the analyser is. The task keeps only the frames the sampler
wants (before any colour conversion), converts those in a worker thread, and hands them over
through a LatestSlot (latest wins, drops counted). A frame's timestamps are its receive time (UTC
epoch s) and its RTP time (s since the session's first frame, from aiortc's RTP timestamp).

Unlike RTSP (ingest/sampled.py), a WebRTC camera is decoded in full: aiortc 1.16's
RTCRtpReceiver hands each reassembled frame to a module-level `decoder_worker` thread whose
decoder (`aiortc.codecs.get_decoder`) it creates itself, and exposes neither that codec context
(for `skip_frame`) nor the encoded frames (to drop inter frames before decoding); the only way in
would be to patch private internals. So `decoded_frames` equals the frames received here, and the
keyframe interval is taken from the decoded frames' `key_frame` flag.

A session ends when the peer connection fails or closes, when the track ends, when no frame came
for `stall_timeout_s`, or (WHIP) on DELETE. A WHIP camera then waits for the next publisher; a
WHEP camera reconnects with the same jittered backoff as RTSP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx
from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.exceptions import OperationError
from aiortc.sdp import SessionDescription
from av import VideoFrame

from streamd.config import redact_url
from streamd.errors import SourceError, StreamdError
from streamd.ingest.backoff import Backoff
from streamd.ingest.camera import CameraHealth
from streamd.ingest.frame import Frame
from streamd.ingest.keyframes import KeyframeMeter
from streamd.ingest.slot import LatestSlot
from streamd.ingest.source import SamplingClock, SourceStats

if TYPE_CHECKING:
    from streamd.config import CameraConfig, IceServerConfig, WebRtcConfig

log = logging.getLogger(__name__)

# What aiortc raises for an offer or answer it cannot use.
_SDP_ERRORS = (
    ValueError,
    IndexError,
    KeyError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)
_CLOSE_TIMEOUT_S = 5.0
_WATCH_INTERVAL_S = 0.5


class WhipBusy(StreamdError):
    """A WHIP camera already has a publisher (HTTP 409)."""


class BadOffer(StreamdError):
    """An SDP offer that cannot be answered (HTTP 400); the message says why."""


def frame_from_aiortc(camera: str, frame: VideoFrame, seq: int, received_at: float) -> Frame:
    """An aiortc frame is an `av.VideoFrame` whose `time` is RTP-derived (seconds since the
    session's first frame): the PyAV adapter applies unchanged."""
    return Frame.from_pyav(camera, frame, seq, received_at=received_at)


def rtc_configuration(servers: Sequence[IceServerConfig]) -> RTCConfiguration:
    """ICE servers from the config. An empty list really means none: left to itself aiortc would
    ask Google's public STUN server, which a site daemon must not do unasked."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=list(s.urls),
                username=s.username,
                credential=s.credential.get_secret_value() if s.credential else None,
            )
            for s in servers
        ]
    )


@dataclass(frozen=True)
class WebRtcSpec:
    """One WebRTC camera: WHIP when `whep_url` is None, else WHEP."""

    camera: str
    fps: float = 1.0
    whep_url: str | None = None
    whep_token: str | None = field(default=None, repr=False)
    ice_servers: tuple[IceServerConfig, ...] = ()
    open_timeout_s: float = 5.0
    stall_timeout_s: float = 10.0

    @property
    def display(self) -> str:
        if self.whep_url is not None:
            return f"WHEP {redact_url(self.whep_url)}"
        return f"WHIP POST /api/whip/{self.camera}"


class _Session:
    """One peer connection, the task draining its video track and a watchdog."""

    def __init__(
        self, source: _WebRtcSource, pc: RTCPeerConnection, track: MediaStreamTrack, sid: str
    ) -> None:
        self.id = sid
        self.pc = pc
        self.started = time.monotonic()
        self.last_frame = self.started
        self.frames = 0
        self.ended = asyncio.Event()
        self.reason = ""
        self.resource: str | None = None  # WHEP: the server's session URL, DELETEd on close
        self._closing: asyncio.Future[None] | None = None
        pc.on("connectionstatechange", self._on_state)
        cam = source.spec.camera
        self._tasks = [
            asyncio.create_task(source._drain(self, track), name=f"webrtc-recv-{cam}"),
            asyncio.create_task(
                self._watch(source.spec.stall_timeout_s), name=f"webrtc-watch-{cam}"
            ),
        ]

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed"):
            self.end(f"connection {state}")

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()

    async def _watch(self, stall_s: float) -> None:
        while not self.ended.is_set():
            idle = time.monotonic() - self.last_frame
            if idle > stall_s:
                what = "no frame" if self.frames == 0 else "no new frame"
                self.end(f"{what} for {stall_s:g} s")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), min(_WATCH_INTERVAL_S, stall_s))

    async def close(self) -> None:
        """Stop the tasks and close the peer connection. Idempotent, and a caller cancelled
        half-way (shutdown) does not leave the connection half-closed."""
        self.end("closed")
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(self._tasks)
        try:
            await asyncio.wait_for(self.pc.close(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("peer connection did not close within %.0f s", _CLOSE_TIMEOUT_S)


class _WebRtcSource:
    """The counters, the slot and the recv loop both sources share."""

    def __init__(self, spec: WebRtcSpec) -> None:
        self.spec = spec
        self.stats = SourceStats()
        self.health = CameraHealth()
        self._slot: LatestSlot[Frame] | None = None
        self._seq = 0
        self._busy_drops = 0  # sampled frames skipped because the previous one was converting

    @property
    def dropped(self) -> int:
        return (self._slot.dropped if self._slot else 0) + self._busy_drops

    def _bind_slot(self) -> LatestSlot[Frame]:
        if self._slot is None:
            self._slot = LatestSlot(asyncio.get_running_loop())
        return self._slot

    async def _drain(self, session: _Session, track: MediaStreamTrack) -> None:
        """Pull every frame aiortc decoded; sample, convert off the loop, hand over."""
        loop = asyncio.get_running_loop()
        slot = self._bind_slot()
        clock = SamplingClock(self.spec.fps)
        keyframes = KeyframeMeter()
        converting: asyncio.Future[None] | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                session.end("track ended")
                return
            now = time.time()
            session.last_frame = time.monotonic()
            session.frames += 1
            # aiortc decodes every frame it receives, in its own thread, before we see it.
            self.stats.demuxed += 1
            self.stats.decoded += 1
            self.stats.last_frame_at = now
            if isinstance(frame, VideoFrame) and frame.key_frame:
                keyframes.add(None if frame.time is None else float(frame.time))
                self.stats.keyframe_interval_s = keyframes.typical
            if not self.health.online:
                log.info("camera %s: receiving frames (%s)", self.spec.camera, self.spec.display)
                self.health.online = True
            if not isinstance(frame, VideoFrame) or not clock.want(now):
                continue
            if converting is not None and not converting.done():
                self._busy_drops += 1
                continue
            converting = loop.run_in_executor(None, self._convert, frame, self._seq, now, slot)
            self._seq += 1

    def _convert(
        self, frame: VideoFrame, seq: int, received_at: float, slot: LatestSlot[Frame]
    ) -> None:
        """Worker thread: colour conversion for one sampled frame."""
        try:
            out = frame_from_aiortc(self.spec.camera, frame, seq, received_at)
        except Exception as exc:  # a corrupt frame must not kill the session
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("camera %s: cannot convert frame: %s", self.spec.camera, exc)
            return
        self.stats.width, self.stats.height = out.width, out.height
        self.stats.sampled += 1
        slot.put(out)

    def _went_offline(self, session: _Session) -> None:
        self.health.online = False
        if self._slot is not None:
            self._slot.take_nowait()  # a frame from a finished session is not news
        log.info(
            "camera %s: session ended (%s) after %d frames",
            self.spec.camera,
            session.reason,
            session.frames,
        )


def _check_offer(sdp: str) -> None:
    """Reject what aiortc would misread or ignore, with a message a person can act on."""
    if not sdp.lstrip().startswith("v=0"):
        raise BadOffer("an SDP offer starts with 'v=0'")
    try:
        desc = SessionDescription.parse(sdp)
    except _SDP_ERRORS as exc:
        raise BadOffer(f"cannot parse SDP: {type(exc).__name__}: {exc}") from exc
    video = [m for m in desc.media if m.kind == "video"]
    if not video:
        raise BadOffer("the offer has no video m-line")
    if not any(m.direction in (None, "sendonly", "sendrecv") for m in video):
        raise BadOffer("the offer sends no video (every video m-line is recvonly or inactive)")


@dataclass(frozen=True)
class WhipAnswer:
    session_id: str
    sdp: str


class WhipSource(_WebRtcSource):
    """A camera that a publisher pushes to (POST /api/whip/<camera>); one publisher at a time."""

    def __init__(self, spec: WebRtcSpec) -> None:
        super().__init__(spec)
        self._session: _Session | None = None
        self._negotiating = False
        self._live: set[_Session] = set()  # until closed, including ones being closed
        self._reapers: set[asyncio.Task[None]] = set()

    @property
    def session_id(self) -> str | None:
        return self._session.id if self._session is not None else None

    async def publish(self, offer_sdp: str) -> WhipAnswer:
        """Answer a publisher's offer (non-trickle: the answer carries every candidate).

        Raises WhipBusy while another publisher holds the camera, BadOffer for an unusable offer.
        """
        _check_offer(offer_sdp)
        if self._session is not None or self._negotiating:
            raise WhipBusy(
                f"camera {self.spec.camera!r} already has a publisher; DELETE its session "
                "resource first (or wait until it times out)"
            )
        self._bind_slot()
        self._negotiating = True
        pc = RTCPeerConnection(rtc_configuration(self.spec.ice_servers))
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            except _SDP_ERRORS as exc:
                raise BadOffer(f"{type(exc).__name__}: {exc}") from exc
            track = next((t for t in tracks if t.kind == "video"), None)
            if track is None:
                raise BadOffer("the offer sends no video track")
            # Only the first video track is analysed; the rest (audio, more video) are answered
            # inactive so aiortc neither decodes them nor queues their frames.
            for tr in pc.getTransceivers():
                if tr.receiver.track is not track:
                    tr.direction = "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await pc.close()
            raise
        finally:
            self._negotiating = False
        session = _Session(self, pc, track, secrets.token_urlsafe(16))
        self._session = session
        self._live.add(session)
        self.stats.sessions += 1
        reaper = asyncio.create_task(self._reap(session), name=f"whip-{self.spec.camera}")
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        log.info("camera %s: WHIP publisher connected (session %s)", self.spec.camera, session.id)
        return WhipAnswer(session.id, pc.localDescription.sdp)

    async def stop_session(self, session_id: str) -> bool:
        """End the session `session_id` (DELETE); False if it is not the current one."""
        session = self._session
        if session is None or not secrets.compare_digest(session.id, session_id):
            return False
        session.end("ended by DELETE")
        await self._finish(session)
        return True

    async def _reap(self, session: _Session) -> None:
        await session.ended.wait()
        await self._finish(session)

    async def _finish(self, session: _Session) -> None:
        if self._session is session:
            self._session = None
            self._went_offline(session)
        await session.close()
        self._live.discard(session)

    async def frames(self) -> AsyncIterator[Frame]:
        slot = self._bind_slot()
        try:
            while True:
                yield await slot.get()
        finally:
            # the pipeline stopped (shutdown or restart): nobody analyses a publisher's video
            for reaper in list(self._reapers):
                reaper.cancel()
            for session in list(self._live):
                session.end("camera stopped")
                await self._finish(session)


class WhepSource(_WebRtcSource):
    """A camera pulled from a WHEP server; reconnects with jittered, capped backoff."""

    def __init__(self, spec: WebRtcSpec, *, backoff_max_s: float = 30.0) -> None:
        if spec.whep_url is None:
            raise ValueError("a WHEP source needs whep_url")
        super().__init__(spec)
        self.url: str = spec.whep_url
        self.backoff = Backoff(cap=backoff_max_s)

    async def frames(self) -> AsyncIterator[Frame]:
        slot = self._bind_slot()
        async with httpx.AsyncClient(timeout=self.spec.open_timeout_s) as http:
            while True:
                session: _Session | None = None
                try:
                    session = await self._connect(http)
                    while (frame := await _next_frame(slot, session)) is not None:
                        yield frame
                except (SourceError, httpx.HTTPError, OSError, *_SDP_ERRORS) as exc:
                    self.stats.errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "camera %s: %s: %s",
                        self.spec.camera,
                        self.spec.display,
                        self.stats.last_error,
                    )
                finally:
                    if session is not None:
                        await self._close(session, http)
                if session is not None:
                    self._went_offline(session)
                    if session.frames and time.monotonic() - session.started > 10:
                        self.backoff.reset()
                delay = self.backoff.next_delay()
                self.health.reconnects += 1
                log.info("camera %s: reconnecting in %.1f s", self.spec.camera, delay)
                await asyncio.sleep(delay)

    async def _connect(self, http: httpx.AsyncClient) -> _Session:
        pc = RTCPeerConnection(rtc_configuration(self.spec.ice_servers))
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        resource: str | None = None
        try:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())  # gathers: non-trickle
            headers = {"Content-Type": "application/sdp", "Accept": "application/sdp"}
            if self.spec.whep_token:
                headers["Authorization"] = f"Bearer {self.spec.whep_token}"
            resp = await http.post(self.url, content=pc.localDescription.sdp, headers=headers)
            if resp.status_code not in (200, 201):
                raise SourceError(
                    f"WHEP server {redact_url(self.url)} answered {resp.status_code}: "
                    f"{resp.text.strip()[:200]}"
                )
            if loc := resp.headers.get("location"):
                resource = urljoin(self.url, loc)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(resp.text, "answer"))
            except _SDP_ERRORS as exc:
                raise SourceError(f"unusable WHEP answer: {type(exc).__name__}: {exc}") from exc
            track = next((t for t in tracks if t.kind == "video"), None)
            if track is None:
                raise SourceError("the WHEP answer sends no video")
        except BaseException:
            await pc.close()
            if resource is not None:
                await self._delete(http, resource)
            raise
        session = _Session(self, pc, track, secrets.token_urlsafe(8))
        session.resource = resource
        self.stats.sessions += 1
        log.info("camera %s: WHEP session started (%s)", self.spec.camera, self.spec.display)
        return session

    async def _close(self, session: _Session, http: httpx.AsyncClient) -> None:
        await session.close()
        if session.resource is not None:
            await self._delete(http, session.resource)

    async def _delete(self, http: httpx.AsyncClient, resource: str) -> None:
        headers = {}
        if self.spec.whep_token:
            headers["Authorization"] = f"Bearer {self.spec.whep_token}"
        try:
            await http.delete(resource, headers=headers, timeout=2.0)
        except httpx.HTTPError as exc:  # the server may be the thing that died
            log.debug("camera %s: WHEP DELETE failed: %s", self.spec.camera, exc)


async def _next_frame(slot: LatestSlot[Frame], session: _Session) -> Frame | None:
    """The next frame, or None once the session has ended."""
    getter = asyncio.ensure_future(slot.get())
    ender = asyncio.ensure_future(session.ended.wait())
    try:
        await asyncio.wait({getter, ender}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (getter, ender):
            if not fut.done():
                fut.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None


def webrtc_source(camera: str, cfg: CameraConfig, webrtc: WebRtcConfig) -> WhipSource | WhepSource:
    """The source for a camera configured `webrtc: whip` or `webrtc: {whep: URL}`."""
    mode = cfg.webrtc
    if mode is None:
        raise ValueError(f"camera {camera!r} is not a WebRTC camera")
    spec = WebRtcSpec(
        camera=camera,
        fps=cfg.fps,
        ice_servers=tuple(webrtc.ice_servers),
        open_timeout_s=cfg.open_timeout_s,
        stall_timeout_s=cfg.stall_timeout_s,
    )
    if mode == "whip":
        return WhipSource(spec)
    token = mode.token.get_secret_value() if mode.token is not None else None
    spec = dataclasses.replace(spec, whep_url=mode.whep, whep_token=token)
    return WhepSource(spec, backoff_max_s=cfg.backoff_max_s)

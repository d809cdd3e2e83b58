"""Shared plumbing of the WebRTC sources: one peer connection's session, the recv loop both
sources share, frame conversion, ICE configuration and the camera's spec.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiortc import (
    InvalidAccessError,
    InvalidStateError,
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.exceptions import OperationError
from av import VideoFrame

from streamd.config import redact_url
from streamd.ingest.camera import CameraHealth
from streamd.ingest.frame import Frame
from streamd.ingest.keyframes import KeyframeMeter
from streamd.ingest.slot import LatestSlot
from streamd.ingest.source import SamplingClock, SourceStats

if TYPE_CHECKING:
    from streamd.config import IceServerConfig

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

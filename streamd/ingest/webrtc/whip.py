"""The WHIP source: a publisher pushes its video to the daemon (POST /api/whip/<camera>), one
publisher at a time; when its session ends the camera waits for the next one."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from streamd.errors import StreamdError
from streamd.ingest.frame import Frame
from streamd.ingest.webrtc.session import (
    _SDP_ERRORS,
    WebRtcSpec,
    _Session,
    _WebRtcSource,
    rtc_configuration,
)

log = logging.getLogger(__name__)


class WhipBusy(StreamdError):
    """A WHIP camera already has a publisher (HTTP 409)."""


class BadOffer(StreamdError):
    """An SDP offer that cannot be answered (HTTP 400); the message says why."""


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

"""The WHEP source: the daemon pulls a camera from a WHEP server (a camera, go2rtc, MediaMTX) and
reconnects with the same jittered backoff as RTSP."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from urllib.parse import urljoin

import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from streamd.config import redact_url
from streamd.errors import SourceError
from streamd.ingest.backoff import Backoff
from streamd.ingest.frame import Frame
from streamd.ingest.webrtc.session import (
    _SDP_ERRORS,
    WebRtcSpec,
    _next_frame,
    _Session,
    _WebRtcSource,
    rtc_configuration,
)

log = logging.getLogger(__name__)


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

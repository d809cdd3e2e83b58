"""WebRTC camera sources (aiortc): WHIP, where a publisher pushes to the daemon, and WHEP, where
the daemon pulls from a server (a camera, go2rtc, MediaMTX).

Both have the face of `Camera`: `frames()` forever, `stats`, `health`, `dropped`, `spec.display`.
The plumbing both share (session, recv loop, frame conversion) is in `session`, the sources in
`whip` and `whep`; this module picks one for a configured camera.

A session ends when the peer connection fails or closes, when the track ends, when no frame came
for `stall_timeout_s`, or (WHIP) on DELETE. A WHIP camera then waits for the next publisher; a
WHEP camera reconnects with the same jittered backoff as RTSP.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from streamd.ingest.webrtc.session import WebRtcSpec, frame_from_aiortc, rtc_configuration
from streamd.ingest.webrtc.whep import WhepSource
from streamd.ingest.webrtc.whip import BadOffer, WhipAnswer, WhipBusy, WhipSource

if TYPE_CHECKING:
    from streamd.config import CameraConfig, WebRtcConfig

__all__ = [
    "BadOffer",
    "WebRtcSpec",
    "WhepSource",
    "WhipAnswer",
    "WhipBusy",
    "WhipSource",
    "frame_from_aiortc",
    "rtc_configuration",
    "webrtc_source",
]


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

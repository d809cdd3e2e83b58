"""The `cameras:` section: one source per camera and how it is sampled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from streamd.config.base import StrictModel
from streamd.config.secrets import unencoded_password_char
from streamd.config.site import LineConfig, ZoneName, ZonePolygon
from streamd.config.webrtc import WhepConfig, _unencoded_message


class CameraConfig(StrictModel):
    url: str | None = Field(None, description="rtsp:// or rtsps:// stream URL.")
    file: Path | None = Field(None, description="A video file replayed at real-time pace.")
    demo: bool = Field(False, description="Analyse the built-in generated demo scene.")
    webrtc: Literal["whip"] | WhepConfig | None = Field(
        None,
        description="A WebRTC camera: `whip` accepts one publisher at POST /api/whip/<camera> "
        "(browsers, OBS, GStreamer); `{whep: URL}` pulls from a WHEP server.",
    )
    loop: bool = Field(False, description="Replay `file` forever.")
    fps: float = Field(1.0, gt=0, le=30, description="Frames analysed per second.")
    window_tokens: int = Field(
        1_000_000, ge=1_000, le=100_000_000, description="Token budget of the rolling window."
    )
    diff_threshold: float = Field(
        0.004,
        ge=0,
        le=1,
        description="Fraction of changed pixels under which a sampled frame counts as unchanged "
        "and is not re-analysed.",
    )
    open_timeout_s: float = Field(5.0, gt=0, description="Timeout to open the stream.")
    read_timeout_s: float = Field(5.0, gt=0, description="Timeout for one read.")
    stall_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Reconnect when nothing arrived for this long (wall clock); a camera "
        "whose packets keep coming waits up to a minute for a decodable frame (a long GOP's "
        "next keyframe).",
    )
    backoff_max_s: float = Field(30.0, gt=0, description="Cap of the reconnect backoff.")
    enabled: bool = Field(True, description="Run this camera.")
    zones: dict[ZoneName, ZonePolygon] = Field(
        default_factory=dict,
        description="Named polygons, points as [x, y] fractions of width and height; a track "
        "is in a zone when the bottom-centre of its box is inside.",
    )
    lines: dict[ZoneName, LineConfig] = Field(
        default_factory=dict, description="Named directed lines {from: [x, y], to: [x, y]}."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if bad := unencoded_password_char(v):
            raise ValueError(_unencoded_message("camera url", bad))
        parts = urlsplit(v)
        if parts.scheme not in ("rtsp", "rtsps"):
            raise ValueError(
                f"camera url must be rtsp:// or rtsps://, got scheme {parts.scheme or 'none'!r}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"camera url has an invalid port: {exc}") from None
        if not parts.hostname:
            raise ValueError("camera url has no host")
        del port
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CameraConfig:
        if (self.url is not None) + (self.file is not None) + self.demo + (
            self.webrtc is not None
        ) != 1:
            raise ValueError("a camera needs exactly one source: url, file, demo or webrtc")
        return self

"""What a pipeline needs from a camera source, whatever the transport (RTSP/file, WHIP, WHEP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from streamd.ingest.camera import CameraHealth
from streamd.ingest.frame import Frame
from streamd.ingest.source import SourceStats


class SourceInfo(Protocol):
    @property
    def camera(self) -> str: ...

    @property
    def display(self) -> str:
        """Where the frames come from, safe to show (no passwords)."""
        ...


class FrameSource(Protocol):
    """Frames forever across disconnects, plus the counters /api/cameras and /metrics show."""

    @property
    def spec(self) -> SourceInfo: ...

    @property
    def stats(self) -> SourceStats: ...

    @property
    def health(self) -> CameraHealth: ...

    @property
    def dropped(self) -> int: ...

    def frames(self) -> AsyncIterator[Frame]: ...

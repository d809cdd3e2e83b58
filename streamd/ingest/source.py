"""Camera sources decoded with PyAV in a worker thread.

One thread per camera session: it opens the stream, decodes, keeps only the frames the sampler
wants (so colour conversion is paid at the analysis rate, not the camera's), stamps each with its
receive time, and hands it to the loop through a LatestSlot. The thread ends when the stream ends
(a live RTSP stream that ends is a disconnect: PyAV just stops yielding when the server dies), when
a read times out, or when asked to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av

from streamd.config import redact_url
from streamd.ingest.frame import Frame
from streamd.ingest.slot import LatestSlot

log = logging.getLogger(__name__)

# Fast start and low latency: probe little, buffer nothing; TCP because UDP RTP through NATs and
# lossy Wi-Fi gives smeared frames, and a surveillance analyser prefers late over broken.
RTSP_OPTIONS = {
    "rtsp_transport": "tcp",
    "analyzeduration": "0",
    "probesize": "32768",
    "fflags": "nobuffer",
}


@dataclass
class SourceStats:
    """Counters a source thread updates; read by the loop for health and /metrics."""

    decoded: int = 0
    sampled: int = 0
    sessions: int = 0
    errors: int = 0
    last_frame_at: float = 0.0
    last_error: str = ""
    width: int = 0
    height: int = 0
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SourceSpec:
    """What to open: an RTSP URL, or a file replayed at real-time pace (optionally looped)."""

    camera: str
    url: str | None = None
    file: Path | None = None
    demo: bool = False
    loop: bool = False
    fps: float = 1.0
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0

    @property
    def display(self) -> str:
        if self.demo:
            return "generated demo scene"
        return redact_url(self.url) if self.url else str(self.file)

    @property
    def is_live(self) -> bool:
        return self.url is not None


class SamplingClock:
    """Decides which decoded frames to keep so that about `fps` frames per second pass.

    Works on the frames' receive time: slots are fixed on a grid so the rate does not drift, and a
    late frame does not cause a burst of catch-up frames.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next = 0.0

    def want(self, t: float) -> bool:
        if t + 1e-3 < self._next:
            return False
        self._next = max(self._next + self.period, t + self.period * 0.5)
        if self._next < t:
            self._next = t + self.period
        return True


def read_session(
    spec: SourceSpec,
    slot: LatestSlot[Frame],
    stop: threading.Event,
    stats: SourceStats,
    seq_start: int = 0,
) -> int:
    """Run one open→decode→end session in the calling (worker) thread; return the next seq.

    Raises av.error.FFmpegError / OSError on open or read failures: the caller reconnects.
    """
    if spec.demo:
        from streamd.ingest.demo import demo_session

        return demo_session(spec.camera, spec.fps, slot, stop, stats, seq_start)
    target = spec.url if spec.url is not None else str(spec.file)
    options = RTSP_OPTIONS if spec.is_live else {}
    clock = SamplingClock(spec.fps)
    seq = seq_start
    container: Any = av.open(
        target, options=options, timeout=(spec.open_timeout_s, spec.read_timeout_s)
    )
    stats.sessions += 1
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        while not stop.is_set():
            wall0 = time.time()
            pts0: float | None = None
            for frame in container.decode(stream):
                if stop.is_set():
                    return seq
                now = time.time()
                if not spec.is_live and frame.time is not None:
                    # Replay at the pace the file was recorded: a file is a camera in the demo.
                    if pts0 is None:
                        pts0 = float(frame.time)
                    lag = (float(frame.time) - pts0) - (now - wall0)
                    if lag > 0:
                        if stop.wait(lag):
                            return seq
                        now = time.time()
                stats.decoded += 1
                stats.last_frame_at = now
                if not clock.want(now):
                    continue
                out = Frame.from_pyav(spec.camera, frame, seq, received_at=now)
                stats.width, stats.height = out.width, out.height
                seq += 1
                stats.sampled += 1
                slot.put(out)
            if spec.is_live or not spec.loop:
                return seq
            container.seek(0)
    finally:
        container.close()
    return seq

"""Camera sources demuxed and (sparingly) decoded with PyAV in a worker thread.

One thread per camera session: it opens the stream, demuxes every packet, decodes only what the
sampler needs (see ingest/sampled.py: keyframes alone, or a GOP up to the due frame), so both
decoding and colour conversion are paid at about the analysis rate, not the camera's. Each
sampled frame is stamped with the receive time of its own packet and handed to the loop through
a LatestSlot. The thread ends when the stream ends
(a live RTSP stream that ends is a disconnect: PyAV just stops yielding when the server dies), when
a read times out, or when asked to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from streamd.config import redact_url
from streamd.ingest.frame import Frame
from streamd.ingest.sampled import Sample, SampledDecoder
from streamd.ingest.slot import LatestSlot

if TYPE_CHECKING:
    from streamd.ingest.sampled import VideoPacket

log = logging.getLogger(__name__)

# Fast start and low latency: probe little, buffer nothing; TCP because UDP RTP through NATs and
# lossy Wi-Fi gives smeared frames, and a surveillance analyser prefers late over broken.
# "nobuffer" drops the packets read while probing, the session's first keyframe among them:
# a session's first frame comes with its second keyframe (see Camera's keyframe wait).
RTSP_OPTIONS = {
    "rtsp_transport": "tcp",
    "analyzeduration": "0",
    "probesize": "32768",
    "fflags": "nobuffer",
}


@dataclass
class SourceStats:
    """Counters a source thread updates; read by the loop for health and /metrics."""

    decoded: int = 0  # packets handed to the decoder (frames decoded)
    demuxed: int = 0  # video packets read from the stream (frames received)
    sampled: int = 0
    keyframe_interval_s: float | None = None  # typical recent GOP length; None until known
    decode_mode: str = "all"  # "keyframes" or "gop" (ingest/sampled.py); "all" decodes each
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
        self._next: float | None = None

    def want(self, t: float, slack: float = 1e-3) -> bool:
        """Whether the frame received at `t` is kept; one up to `slack` s early still counts."""
        if self._next is None:
            # The first frame sets the grid's phase: a sampler that starts on a keyframe then
            # keeps landing on keyframes when the GOP is a multiple of the period.
            self._next = t + self.period
            return True
        if t + slack < self._next:
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
    seq = seq_start
    container: Any = av.open(
        target, options=options, timeout=(spec.open_timeout_s, spec.read_timeout_s)
    )
    stats.sessions += 1
    try:
        stream = container.streams.video[0]
        # Slice threads only: frame threads hold each frame back one decode per thread, which
        # would mean decoding past every sample; and with dozens of cameras per core, one
        # camera's decode has no idle cores to spread over anyway.
        stream.thread_type = "SLICE"
        decoder = SampledDecoder(stream.codec_context, SamplingClock(spec.fps), stats)
        while not stop.is_set():
            pace = _Pacer(spec.is_live, stop)
            for packet in container.demux(stream):
                if stop.is_set():
                    return seq
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                now = pace.wait(packet)
                if now is None:
                    return seq
                stats.last_frame_at = now
                for sample in decoder.push(packet, now):
                    seq = _hand_over(spec.camera, sample, seq, slot, stats)
            for sample in decoder.finish():
                seq = _hand_over(spec.camera, sample, seq, slot, stats)
            if spec.is_live or not spec.loop:
                return seq
            container.seek(0)
            decoder.restart()
    finally:
        container.close()
    return seq


class _Pacer:
    """Receive time of each packet; a file is replayed at the pace it was recorded."""

    def __init__(self, live: bool, stop: threading.Event) -> None:
        self.live = live
        self.stop = stop
        self.wall0 = time.time()
        self.t0: float | None = None

    def wait(self, packet: VideoPacket) -> float | None:
        """Now, after waiting for a file packet's time to come; None when asked to stop."""
        now = time.time()
        ts = packet.dts if packet.dts is not None else packet.pts
        if self.live or ts is None:
            return now
        # Decode order (DTS) is the order a camera sends in; PTS goes back and forth with B-frames.
        t = float(ts * packet.time_base)
        if self.t0 is None:
            self.t0 = t
        lag = (t - self.t0) - (now - self.wall0)
        if lag > 0:
            if self.stop.wait(lag):
                return None
            now = time.time()
        return now


def _hand_over(
    camera: str, sample: Sample, seq: int, slot: LatestSlot[Frame], stats: SourceStats
) -> int:
    out = Frame.from_pyav(camera, sample.frame, seq, received_at=sample.received_at)
    stats.width, stats.height = out.width, out.height
    stats.sampled += 1
    slot.put(out)
    return seq + 1

"""Decode only what the sampler keeps: keyframes alone, or a GOP up to the frame that is due.

A camera sends 25 frames a second and the analyser wants one. Inter frames cannot be decoded
without every frame back to their keyframe, so the cheapest honest way to get the frame due now
depends on how far apart the keyframes are:

* keyframes at least as often as samples: hand the decoder keyframe packets only. Each one is
  decoded on its own (the decoder is drained and reset after it), the rest are demuxed and
  not decoded. Should a keyframe not come by half a GOP after a sample fell due (the camera
  lengthened its GOP), that sample is decoded from the GOP's packets as below.
* sparser keyframes: keep the current GOP's packets undecoded; when a sample is due, decode the
  backlog from the keyframe (or from where the last sample of this GOP left off) up to the due
  packet, then go on demuxing without decoding. Nothing after a sample is decoded unless a later
  sample of the same GOP needs it, except the few packets a B-frame stream's reorder delay holds
  the due frame behind.

Until two keyframes have been seen the interval is unknown and the GOP way is used: it is right
for any GOP. Packets before the first keyframe are dropped: without it they cannot be decoded.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from streamd.ingest.keyframes import KeyframeMeter

if TYPE_CHECKING:
    import av
    from av.video.stream import VideoStream

    VideoPacket: TypeAlias = av.Packet[VideoStream]

    from streamd.ingest.source import SamplingClock, SourceStats

Mode = Literal["keyframes", "gop"]

# Keyframes-only is chosen while the longest recent GOP is at most this much longer than the
# sampling period: samples then come at most 15 % further apart, instead of decoding GOPs.
KEYFRAME_TOLERANCE = 1.15
# Undecoded packets kept for one GOP at most (a minute at 25 fps): a stream whose keyframes stop
# coming (or never come flagged) is then decoded as it arrives rather than held without bound.
MAX_BACKLOG = 1500
# A B-frame decoder holds a frame back by its reorder depth (at most 16 in H.264); past this
# many extra packets without the due frame the decoder is out of step and the sample is dropped.
MAX_REORDER = 16


@dataclass(frozen=True, slots=True)
class Sample:
    """A decoded frame the clock asked for, with the receive time of its own packet."""

    frame: av.VideoFrame
    received_at: float


@dataclass(slots=True)
class _Due:
    pts: int | None
    arrived: float
    budget: int = MAX_REORDER

    def order(self) -> float:
        # No PTS: the next frame out will do
        return float("-inf") if self.pts is None else self.pts


class SampledDecoder:
    """Feeds one video stream's packets to its decoder as sparingly as the sampling allows."""

    def __init__(
        self,
        codec: Any,
        clock: SamplingClock,
        stats: SourceStats,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.codec = codec
        self.max_backlog = max_backlog
        self.clock = clock
        self.stats = stats
        self.meter = KeyframeMeter()
        self.mode: Mode = "gop"
        self._in_gop = False  # seen this GOP's keyframe: its packets can be decoded
        self._backlog: list[VideoPacket] = []  # this GOP's packets not yet given to the decoder
        self._arrived: dict[int, float] = {}  # pts -> receive time, for this GOP's packets
        # Samples the decoder still owes (reorder delay), by PTS: with B-frames, packets come
        # in decode order, so a later due packet can be an earlier frame.
        self._dues: list[_Due] = []
        self._time_base: Fraction | None = None
        stats.decode_mode = self.mode

    def restart(self) -> None:
        """The stream jumps (a file loops to its start): forget the GOP and the decoder state."""
        self.codec.flush_buffers()
        self.meter.restart()
        self._in_gop = False
        self._backlog.clear()
        self._arrived.clear()
        self._dues.clear()

    def push(self, packet: VideoPacket, arrived: float) -> list[Sample]:
        """One demuxed packet received at `arrived` (epoch s); the samples it completes."""
        self.stats.demuxed += 1
        self._time_base = packet.time_base
        if packet.is_keyframe:
            self._keyframe(packet)
        if not self._in_gop:
            return []
        if packet.pts is not None:
            self._arrived[packet.pts] = arrived
        if self._dues:
            # The decoder owes a frame: it needs this packet anyway. Another sample may fall
            # due meanwhile (a high sampling rate on a B-frame stream).
            if self.clock.want(arrived):
                self._owe(packet, arrived)
            return self._decode([packet])
        self._backlog.append(packet)
        if len(self._backlog) > self.max_backlog:
            self._catch_up()
        if self.mode == "keyframes":
            if packet.is_keyframe:
                if not self.clock.want(arrived, slack=self._slack()):
                    return []
                return self._decode_alone(packet, arrived)
            # The GOP grew past the period (a camera that varies it): the keyframe this sample
            # waited for is late by more than the slack, so decode the GOP up to now instead.
            if not self.clock.want(arrived, slack=-self._slack()):
                return []
        elif not self.clock.want(arrived, slack=self._slack() if packet.is_keyframe else 1e-3):
            return []
        self._owe(packet, arrived)
        backlog, self._backlog = self._backlog, []
        return self._decode(backlog)

    def finish(self) -> list[Sample]:
        """End of stream: drain the samples the decoder still holds back."""
        if not self._dues:
            return []
        out = self._collect(self._drain())
        self._dues.clear()
        return out

    def _drain(self) -> list[av.VideoFrame]:
        """Every frame the decoder still holds, then a reset so it can decode again."""
        frames: list[av.VideoFrame] = self.codec.decode(None)
        for frame in frames:
            # Drained frames have no packet to take their time base from
            if frame.time_base is None:
                frame.time_base = self._time_base
        self.codec.flush_buffers()
        return frames

    def _catch_up(self) -> None:
        """Decode the backlog but its newest packet (nothing is due before it), so the decoder
        keeps pace with a GOP too long to hold."""
        *older, newest = self._backlog
        for packet in older:
            self.stats.decoded += 1
            self.codec.decode(packet)
        self._backlog = [newest]

    def _owe(self, packet: VideoPacket, arrived: float) -> None:
        bisect.insort(self._dues, _Due(packet.pts, arrived), key=_Due.order)

    def _settled(self, pts: int) -> int:
        """How many dues (by PTS) the frame at `pts` settles: its own and any skipped before."""
        return sum(1 for due in self._dues if due.order() <= pts)

    def _keyframe(self, packet: VideoPacket) -> None:
        t = float(packet.pts * packet.time_base) if packet.pts is not None else None
        self.meter.add(t)
        self._in_gop = True
        self._backlog.clear()
        self._arrived.clear()
        longest = self.meter.longest
        keyframes_do = longest is not None and longest <= self.clock.period * KEYFRAME_TOLERANCE
        self.mode = "keyframes" if keyframes_do else "gop"
        self.stats.keyframe_interval_s = self.meter.typical
        self.stats.decode_mode = self.mode

    def _slack(self) -> float:
        # Keyframes come on their own grid: take one a little early rather than the frame after
        # it, which costs a GOP (keyframes only) or a decode from the keyframe (GOP mode). In
        # keyframes mode the nearest keyframe to the due time wins; in GOP mode a keyframe may
        # be 10 % of a period early, so samples stay at least 0.9 periods apart.
        if self.mode == "keyframes":
            return (self.meter.typical or 0.0) / 2
        return self.clock.period * 0.1

    def _decode_alone(self, packet: VideoPacket, arrived: float) -> list[Sample]:
        self.stats.decoded += 1
        frames = list(self.codec.decode(packet))
        self._backlog.clear()  # the decoder is now at this keyframe
        if not any(f.pts == packet.pts for f in frames):
            # A decoder with a reorder delay holds even a keyframe back: drain it, then reset
            # it. A later sample of this GOP, if any, then starts again from the keyframe.
            frames += self._drain()
            self._backlog.append(packet)
        # Frames still held from an earlier GOP may come out first; the keyframe's is the one.
        mine = [f for f in frames if f.pts == packet.pts] or frames[-1:]
        return [Sample(mine[0], arrived)] if mine else []

    def _decode(self, packets: list[VideoPacket]) -> list[Sample]:
        out: list[Sample] = []
        for packet in packets:
            self.stats.decoded += 1
            out += self._collect(self.codec.decode(packet))
        if self._dues:
            self._dues[0].budget -= 1
            if self._dues[0].budget < 0:
                # The due frame never came out: the decoder lost step with this GOP (broken
                # packets). Drop the samples and wait for the next keyframe.
                self._dues.clear()
                self._in_gop = False
                self.codec.flush_buffers()
        return out

    def _collect(self, frames: list[av.VideoFrame]) -> list[Sample]:
        out: list[Sample] = []
        for frame in frames:
            if not self._dues:
                break
            due = self._dues[0]
            # Frames come out in presentation order: the first at or past the due one is it
            # (past it only when the due frame itself never came out).
            if frame.pts is None or frame.pts >= due.order():
                del self._dues[: 1 if frame.pts is None else self._settled(frame.pts)]
                pts = frame.pts
                received = due.arrived if pts is None else self._arrived.get(pts, due.arrived)
                out.append(Sample(frame, received))
        return out

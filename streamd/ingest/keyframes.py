"""How far apart a stream's keyframes are, learnt from the packets as they are demuxed."""

from __future__ import annotations

import statistics
from collections import deque

# A gap longer than this between keyframes is a stall, a seek or a PTS jump, not a GOP.
MAX_GOP_S = 60.0


class KeyframeMeter:
    """Keeps the last few keyframe-to-keyframe intervals (s) of one stream.

    Only whole GOPs count: the packets before the first keyframe (a reader joins a live stream
    mid-GOP) never start an interval, and a non-increasing or huge gap (a loop back to the start
    of a file, a camera's clock jump) is skipped rather than taken as a GOP. Cameras vary their
    GOP (scene cuts, smart codecs), so both the typical and the longest recent interval are kept.
    """

    def __init__(self, window: int = 8) -> None:
        self._intervals: deque[float] = deque(maxlen=window)
        self._last: float | None = None

    def add(self, t: float | None) -> None:
        """Record a keyframe at stream time `t` (s); None (no PTS) is ignored."""
        if t is None:
            return
        if self._last is not None and 0.0 < t - self._last <= MAX_GOP_S:
            self._intervals.append(t - self._last)
        self._last = t

    def restart(self) -> None:
        """The stream jumped (a file looped): the next keyframe starts no interval."""
        self._last = None

    @property
    def typical(self) -> float | None:
        """The median recent interval, None until two keyframes were seen."""
        return statistics.median(self._intervals) if self._intervals else None

    @property
    def longest(self) -> float | None:
        return max(self._intervals) if self._intervals else None

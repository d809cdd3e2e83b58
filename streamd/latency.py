"""Per camera: how long from a frame's receipt to its rules having been evaluated.

A prometheus_client Histogram (cumulative, for /metrics) and a window of the latest samples
(p50 / p95 of recent behaviour, for GET /api/cameras: the histogram's buckets are too coarse and
its totals too old to say how the camera is doing now).
"""

from __future__ import annotations

from collections import deque
from typing import Final

import numpy as np
from prometheus_client import Histogram

__all__ = ["LATENCY_BUCKETS", "LatencyRecorder"]

LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_WINDOW: Final = 256  # samples: at 1 fps, the last four minutes or so


class LatencyRecorder:
    def __init__(self, camera: str) -> None:
        # Not registered anywhere: /metrics collects every camera's histogram into one family.
        self.histogram = Histogram(
            "streamd_frame_to_rule_seconds",
            "Seconds from a frame's receipt to its rules having been evaluated.",
            ["camera"],
            registry=None,
            buckets=LATENCY_BUCKETS,
        )
        self._child = self.histogram.labels(camera=camera)
        self._recent: deque[float] = deque(maxlen=_WINDOW)

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)  # a wall-clock step back must not give a negative sample
        self._child.observe(seconds)
        self._recent.append(seconds)

    def quantiles(self) -> tuple[float | None, float | None]:
        """(p50, p95) over the recent window; None before the first sample."""
        if not self._recent:
            return None, None
        p50, p95 = np.quantile(np.fromiter(self._recent, float), (0.5, 0.95))
        return float(p50), float(p95)

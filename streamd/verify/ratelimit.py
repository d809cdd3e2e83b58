"""Per-camera token buckets: each camera may start N verifications per minute, in bursts of N."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CameraRateLimiter"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class CameraRateLimiter:
    """Never waits: a camera over its budget is told no at once, other cameras are unaffected."""

    per_minute: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute)

    def try_take(self, camera: str) -> bool:
        now = self.clock()
        bucket = self._buckets.get(camera)
        if bucket is None:
            bucket = self._buckets[camera] = _Bucket(self.capacity, now)
        refill = (now - bucket.stamp) * self.per_minute / 60.0
        bucket.tokens = min(self.capacity, bucket.tokens + refill)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

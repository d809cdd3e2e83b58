"""Jittered, capped exponential backoff shared by cameras and the MQTT publisher."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """`random.uniform(0, min(cap, base * factor**attempt))`: full jitter keeps many cameras
    that lost the same server from reconnecting in lockstep."""

    base: float = 0.5
    factor: float = 1.8
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * self.factor**self.attempt)
        self.attempt = min(self.attempt + 1, 64)
        return self.rng.uniform(ceiling / 4, ceiling)

    def reset(self) -> None:
        self.attempt = 0

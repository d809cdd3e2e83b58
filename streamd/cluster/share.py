"""How many cameras an instance should hold, from what every instance holds now.

Pure arithmetic on one consistent view, so that every instance reading the same view comes to
the same decision: nobody waits for anybody, and no camera is released twice over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def target(cameras: int, instances: int) -> int:
    """The most cameras one instance may hold: ceil(cameras / instances)."""
    return math.ceil(cameras / max(1, instances))


def excess(me: str, counts: Mapping[str, int], cameras: int) -> int:
    """How many cameras `me` should release now.

    `counts` holds every live instance (zero for those that hold nothing). An instance above
    ceil(C/N) gives back down to it. When everyone is at or below the ceiling but some instance
    has fewer than floor(C/N) (a newcomer), the biggest holders above the floor (ties by name)
    give one each, just as many as the newcomers lack beyond the cameras already free, so a
    join moves the fewest cameras.
    """
    n = max(1, len(counts))
    mine = counts.get(me, 0)
    ceiling = target(cameras, n)
    if mine > ceiling:
        return mine - ceiling
    floor = cameras // n
    # Cameras nobody holds go to those lacking first; only the rest has to be given.
    free = max(0, cameras - sum(counts.values()))
    lacking = sum(max(0, floor - c) for c in counts.values()) - free
    if lacking <= 0 or mine <= floor:
        return 0
    donors = sorted(
        (name for name, c in counts.items() if c > floor), key=lambda x: (-counts[x], x)
    )
    return 1 if me in donors[:lacking] else 0


def room(me: str, counts: Mapping[str, int], cameras: int) -> int:
    """How many free cameras `me` may take now (never past the ceiling).

    While some instance has fewer than floor(C/N), those at or above the floor take nothing:
    the cameras being given back are for the newcomer.
    """
    mine = counts.get(me, 0)
    floor = cameras // max(1, len(counts))
    if mine >= floor and any(c < floor for c in counts.values()):
        return 0
    return max(0, target(cameras, len(counts)) - mine)

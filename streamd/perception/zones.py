"""Named zones (polygons) and directed lines of one camera, in fractions of the frame.

A track is in a zone when its anchor — the bottom-centre of its box, where it stands — is
inside the polygon. A line is directed: crossing it from the left of from→to to its right
(as seen on screen) is "in", the other way "out".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamd.perception.world import EventKind, SceneEvent

if TYPE_CHECKING:
    from streamd.perception.geometry import Box
    from streamd.perception.tracker import Track

__all__ = ["Line", "Zone", "ZoneSet", "zone_events"]

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    points: tuple[Point, ...]  # fractions of width and height

    def contains(self, x: float, y: float) -> bool:
        """Even-odd ray casting on the fractional point (x, y)."""
        inside = False
        pts = self.points
        j = len(pts) - 1
        for i in range(len(pts)):
            (xi, yi), (xj, yj) = pts[i], pts[j]
            if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
                inside = not inside
            j = i
        return inside


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) × (b - o); with y pointing down, > 0 means b is right of o→a on screen."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    start: Point
    end: Point

    def crossing(self, before: Point, after: Point) -> str | None:
        """ "in" / "out" when the move before→after crosses the segment, else None."""
        # A point exactly on the line counts as on its right, so a move that stops on the line
        # and one that starts there are not both lost.
        r0 = _cross(self.start, self.end, before) >= 0
        r1 = _cross(self.start, self.end, after) >= 0
        if r0 == r1:
            return None
        # The move's own line must separate the segment's ends too (a proper intersection).
        t0, t1 = _cross(before, after, self.start), _cross(before, after, self.end)
        if (t0 > 0 and t1 > 0) or (t0 < 0 and t1 < 0):
            return None
        return "in" if r1 else "out"


@dataclass(frozen=True)
class ZoneSet:
    zones: tuple[Zone, ...] = ()
    lines: tuple[Line, ...] = ()

    @classmethod
    def from_config(
        cls,
        zones: Mapping[str, Sequence[Sequence[float]]],
        lines: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ) -> ZoneSet:
        return cls(
            tuple(
                Zone(n, tuple((float(p[0]), float(p[1])) for p in pts)) for n, pts in zones.items()
            ),
            tuple(
                Line(n, (float(a[0]), float(a[1])), (float(b[0]), float(b[1])))
                for n, (a, b) in lines.items()
            ),
        )

    def __bool__(self) -> bool:
        return bool(self.zones or self.lines)

    def zones_at(self, x: float, y: float) -> frozenset[str]:
        return frozenset(z.name for z in self.zones if z.contains(x, y))

    def crossings(self, before: Point, after: Point) -> list[tuple[str, str]]:
        out = []
        for line in self.lines:
            direction = line.crossing(before, after)
            if direction is not None:
                out.append((line.name, direction))
        return out


def zone_events(
    zones: ZoneSet,
    tracks: Iterable[Track],
    ts: float,
    size: tuple[int, int],
    before: Mapping[int, Box],
    warm: bool,
) -> list[SceneEvent]:
    """Zones entered and left and lines crossed by the tracks seen at `ts` (`size`: the frame's
    width and height; `before`: each track's box in the previous sample). A track new in this
    sample enters zones only once the model is `warm`: what is there at start-up entered none."""
    if not zones:
        return []
    w, h = size
    out: list[SceneEvent] = []
    for tr in tracks:
        if tr.last_seen != ts:
            continue
        ax, ay = (tr.box.x1 + tr.box.x2) / 2 / w, tr.box.y2 / h
        now = zones.zones_at(ax, ay)
        new_track = tr.track_id not in before
        if not new_track or warm:
            for z in sorted(now - tr.zones):
                out.append(
                    SceneEvent(EventKind.ZONE_ENTERED, ts, tr.track_id, tr.label, tr.box, zone=z)
                )
        for z in sorted(tr.zones - now):
            out.append(SceneEvent(EventKind.ZONE_LEFT, ts, tr.track_id, tr.label, tr.box, zone=z))
        tr.zones = now
        old = before.get(tr.track_id)
        if old is not None:
            prev = ((old.x1 + old.x2) / 2 / w, old.y2 / h)
            for line, direction in zones.crossings(prev, (ax, ay)):
                out.append(
                    SceneEvent(
                        EventKind.LINE_CROSSED,
                        ts,
                        tr.track_id,
                        tr.label,
                        tr.box,
                        line=line,
                        direction=direction,
                    )
                )
    return out

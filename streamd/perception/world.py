"""The world model's output: one immutable `WorldState` per sampled frame.

Everything downstream (rules, the window's encoder, snapshots) reads only this. A track is one
thing with an identity over time: a detected person or vehicle, a moving region the detector
could not name, or a still object the background model found (a bag set down).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streamd.ingest.frame import Frame
from streamd.perception.geometry import Box

__all__ = [
    "EventKind",
    "Posture",
    "SceneEvent",
    "TrackKind",
    "TrackState",
    "WorldState",
]


class TrackKind(StrEnum):
    DETECTED = "detected"  # followed through the detector's boxes
    BLOB = "blob"  # a moving region the detector did not explain
    OBJECT = "object"  # a still object found as static foreground (placed, left)


class Posture(StrEnum):
    UPRIGHT = "upright"
    LOW = "low"  # crouching, sitting, bending
    LYING = "lying"
    UNKNOWN = "unknown"


class EventKind(StrEnum):
    APPEARED = "appeared"
    LEFT = "left"  # the track is gone from the scene
    PLACED = "placed"
    REMOVED = "removed"
    UNATTENDED = "unattended"
    ATTENDED = "attended"
    FELL = "fell"
    GOT_UP = "got_up"
    ZONE_ENTERED = "zone_entered"
    ZONE_LEFT = "zone_left"
    LINE_CROSSED = "line_crossed"


@dataclass(frozen=True, slots=True)
class SceneEvent:
    """Something that happened once, at `ts` (which may be earlier than the frame that saw it,
    e.g. a fall's onset). `zone` / `line` / `direction` where they apply."""

    kind: EventKind
    ts: float
    track_id: int | None = None
    label: str | None = None
    box: Box | None = None
    zone: str | None = None
    line: str | None = None
    direction: str | None = None  # "in" | "out" for line crossings
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrackState:
    """One track as of this frame."""

    track_id: int
    kind: TrackKind
    label: str | None  # by vote over the track's life; None: not identified
    score: float
    box: Box
    first_seen: float
    last_seen: float
    visible: bool  # seen in this frame (not only remembered)
    moving: bool
    stationary_since: float | None  # None while moving
    velocity: tuple[float, float]  # anchor px/s
    history: tuple[tuple[float, Box], ...]  # recent (ts, box), oldest first
    colour: str | None = None
    detected: bool = True  # seen by the detector this frame, not only followed as foreground
    zones: frozenset[str] = frozenset()
    posture: Posture = Posture.UNKNOWN
    posture_since: float | None = None
    fallen_at: float | None = None  # onset of a fall the person has not got up from
    lying_since: float | None = None
    # Objects (TrackKind.OBJECT):
    placed_at: float | None = None
    owner_id: int | None = None
    owner_box: Box | None = None  # where the owner was last seen
    last_attended: float | None = None
    unattended_since: float | None = None

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom-centre of the box: where the thing stands."""
        return ((self.box.x1 + self.box.x2) / 2, self.box.y2)

    def stationary_for(self, now: float) -> float:
        return 0.0 if self.stationary_since is None else max(0.0, now - self.stationary_since)


@dataclass(frozen=True, slots=True)
class WorldState:
    """What is known about one camera's scene at one sampled frame."""

    frame: Frame
    analysed: bool  # False: the frame was unchanged and the detector did not run
    tracks: tuple[TrackState, ...]
    events: tuple[SceneEvent, ...]
    motion: float  # fraction of the frame that is moving foreground
    changed: float  # fraction of pixels changed since the previous sample
    brightness: float  # mean, 0-255
    moving_boxes: tuple[Box, ...] = ()

    @property
    def camera(self) -> str:
        return self.frame.camera

    @property
    def ts(self) -> float:
        return self.frame.received_at

    def visible(self, labels: frozenset[str] | None = None) -> list[TrackState]:
        """Tracks seen in this frame, optionally only those whose label is in `labels`."""
        return [t for t in self.tracks if t.visible and (labels is None or (t.label in labels))]

    def objects(self) -> list[TrackState]:
        """Still objects found by the background model (candidates for left / removed)."""
        return [t for t in self.tracks if t.kind is TrackKind.OBJECT]

    def track(self, track_id: int) -> TrackState | None:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        return None

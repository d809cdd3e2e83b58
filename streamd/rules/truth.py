"""What rule nodes answer: per subject (a track id, or the scene), whether they hold, with the
evidence (`Hit`); and what evaluation is given besides the world state (`Context`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamd.perception.geometry import Box
from streamd.perception.world import Posture, TrackState, WorldState

Key = int | str
SCENE: Key = "scene"


@dataclass(frozen=True, slots=True)
class Hit:
    since: float | None = None
    score: float = 0.5
    boxes: tuple[tuple[str, Box], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Truth:
    """Where a node holds: per subject. `scene_level`: the node is about the whole picture."""

    hits: dict[Key, Hit]
    scene_level: bool = False

    @property
    def holds(self) -> bool:
        return bool(self.hits)


def scene_truth(holds: bool, hit: Hit | None = None) -> Truth:
    return Truth({SCENE: hit or Hit()} if holds else {}, scene_level=True)


class NodeEval(Protocol):
    def step(self, world: WorldState) -> Truth: ...


class SceneScorer(Protocol):
    """The camera's window tokens against a text: (similarity, frame time), None if none yet."""

    def score(self, text: str) -> tuple[float, float] | None: ...


@dataclass
class Context:
    """What evaluation needs besides the world state."""

    tz: dt.tzinfo | None = None  # the site's time zone; None: the host's
    tolerance_s: float = 3.0  # a subject missing this long stops a "held for" clock
    scene: SceneScorer | None = None  # None: the window is off; scene candidates from motion


def present(t: TrackState) -> bool:
    """Seen now: by the detector, or — for someone who is down, whom it rarely sees — as the
    foreground where they lie. A standing person followed only through the foreground for a
    moment after the detector lost them does not keep a count or a presence going."""
    return t.visible and (t.detected or t.fallen_at is not None or t.posture is Posture.LYING)


def label_of(t: TrackState) -> str:
    return t.label or "object"


def track_hit(t: TrackState, since: float | None = None, **details: Any) -> Hit:
    return Hit(
        since=since,
        score=round(max(t.score, 0.5), 3),
        boxes=((label_of(t), t.box),),
        details={
            "track_id": t.track_id,
            "object": label_of(t),
            "zones": sorted(t.zones),
            **details,
        },
    )

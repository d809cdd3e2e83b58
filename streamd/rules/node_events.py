"""Transition nodes: the world model's scene events, and motion changes of tracks."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamd.perception.geometry import Box
from streamd.perception.world import EventKind, Posture, TrackKind, TrackState, WorldState
from streamd.rules import ir
from streamd.rules.node_states import RUN_HEIGHTS_PER_S
from streamd.rules.subjects import class_matches, matches
from streamd.rules.truth import Hit, Key, Truth, track_hit

_EVENT_KINDS = {
    "appears": EventKind.APPEARED,
    "leaves": EventKind.LEFT,
    "enters": EventKind.ZONE_ENTERED,
    "exits": EventKind.ZONE_LEFT,
    "crosses": EventKind.LINE_CROSSED,
    "placed": EventKind.PLACED,
    "removed": EventKind.REMOVED,
    "gets_up": EventKind.GOT_UP,
}


@dataclass
class TransitionEval:
    node: ir.Transition
    moving: dict[int, bool] = field(default_factory=dict)

    def step(self, world: WorldState) -> Truth:
        ev = self.node.event
        if ev == "falls":
            return self._fallen(world)
        if ev in ("stops", "starts_moving", "runs"):
            return self._motion(world)
        kind = _EVENT_KINDS[ev]
        s = self.node.subject
        hits: dict[Key, Hit] = {}
        for e in world.events:
            if e.kind is not kind:
                continue
            if self.node.zone is not None and e.zone != self.node.zone:
                continue
            if self.node.line is not None and e.line != self.node.line:
                continue
            if self.node.direction is not None and e.direction != self.node.direction:
                continue
            track = world.track(e.track_id) if e.track_id is not None else None
            if track is not None:
                subject = s.model_copy(update={"zone": None}) if ev == "exits" else s
                if not matches(subject, track, world, lenient=ev in ("placed", "removed")):
                    continue
                hits[track.track_id] = track_hit(track, e.ts, scene_event=e.kind.value)
            elif e.box is not None and class_matches(s.classes, _ghost(e.box, e.label), True):
                # No live track: one that has left (its id stays its identity) or a removed
                # region (its place is).
                key: Key = (
                    e.track_id
                    if e.track_id is not None
                    else f"{e.kind.value}@{e.box.x1:.0f},{e.box.y1:.0f}"
                )
                hits[key] = Hit(
                    since=e.ts,
                    boxes=((e.label or "object", e.box),),
                    details={
                        "object": e.label or "object",
                        "box": e.box.as_list(),
                        "scene_event": e.kind.value,
                    },
                )
        return Truth(hits)

    def _fallen(self, world: WorldState) -> Truth:
        # A fall lasts until the person gets up (or is gone): one event per fall.
        hits: dict[Key, Hit] = {}
        for t in world.tracks:
            if t.fallen_at is not None and matches(self.node.subject, t, world):
                hits[t.track_id] = track_hit(t, t.fallen_at, fell_at=round(t.fallen_at, 3))
        return Truth(hits)

    def _motion(self, world: WorldState) -> Truth:
        ev = self.node.event
        hits: dict[Key, Hit] = {}
        seen: set[int] = set()
        for t in world.tracks:
            if not t.visible or not matches(self.node.subject, t, world):
                continue
            seen.add(t.track_id)
            was = self.moving.get(t.track_id)
            self.moving[t.track_id] = t.moving
            if (ev == "stops" and was is True and not t.moving) or (
                ev == "starts_moving" and was is False and t.moving
            ):
                hits[t.track_id] = track_hit(t, world.ts)
            elif ev == "runs" and _running(t):
                speed = round(_speed(t) / max(t.box.height, 1.0), 2)
                hits[t.track_id] = track_hit(t, None, heights_per_s=speed)
        for tid in [k for k in self.moving if k not in seen and world.track(k) is None]:
            del self.moving[tid]
        return Truth(hits)


def _ghost(box: Box, label: str | None) -> TrackState:
    """A stand-in track for a removed region, so class queries can be asked of it."""
    return TrackState(
        track_id=-1,
        kind=TrackKind.OBJECT,
        label=label,
        score=0.5,
        box=box,
        first_seen=0.0,
        last_seen=0.0,
        visible=False,
        moving=False,
        stationary_since=None,
        velocity=(0.0, 0.0),
        history=(),
    )


def _speed(t: TrackState) -> float:
    vx, vy = t.velocity
    return float((vx * vx + vy * vy) ** 0.5)


def _running(t: TrackState) -> bool:
    return (
        t.label == "person"
        and t.posture is not Posture.LYING
        and _speed(t) >= RUN_HEIGHTS_PER_S * max(t.box.height, 1.0)
    )

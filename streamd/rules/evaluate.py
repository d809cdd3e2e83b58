"""Evaluating a rule's IR over the world model, one WorldState at a time.

Each node answers, per world state, *for which subjects it holds*: a track id for nodes about
tracks (a person present, a bag left unattended, a car crossing a line), or `SCENE` for nodes
about the whole picture (counts, motion, darkness, clock windows). Subjects are what events
are about: the engine opens one event per subject, so two people arriving ten seconds apart
are two events, and cooldown only keeps the *same* subject from re-alerting.

A `Hit` carries the evidence for one subject: since when it has held by the world model's own
memory (a left object knows when it became unattended, a lying person when they lay down),
a score, boxes for the snapshot and details for the event log. Nodes with time in them
(held for, within, N times in M, dwell) keep state between world states; so does one `Node`
evaluator instance per rule and camera.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamd.perception.geometry import Box
from streamd.perception.world import EventKind, Posture, TrackKind, TrackState, WorldState
from streamd.rules import ir
from streamd.rules.subjects import class_matches, matches

__all__ = ["SCENE", "Hit", "Key", "NodeEval", "Truth", "build"]

Key = int | str
SCENE: Key = "scene"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LYING_MEMORY_S = 2.5
_SCENE_K = 2.5  # standard deviations above the camera's usual score that make a candidate
_SCENE_WARMUP = 10  # scores before the baseline is trusted
_SCENE_MEMORY = 300  # frames the baseline averages over
RUN_HEIGHTS_PER_S = 1.8  # a person whose feet move this many body heights a second runs


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


def _scene(holds: bool, hit: Hit | None = None) -> Truth:
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


def _present(t: TrackState) -> bool:
    """Seen now: by the detector, or — for someone who is down, whom it rarely sees — as the
    foreground where they lie. A standing person followed only through the foreground for a
    moment after the detector lost them does not keep a count or a presence going."""
    return t.visible and (t.detected or t.fallen_at is not None or t.posture is Posture.LYING)


def _label(t: TrackState) -> str:
    return t.label or "object"


def _track_hit(t: TrackState, since: float | None = None, **details: Any) -> Hit:
    return Hit(
        since=since,
        score=round(max(t.score, 0.5), 3),
        boxes=((_label(t), t.box),),
        details={
            "track_id": t.track_id,
            "object": _label(t),
            "zones": sorted(t.zones),
            **details,
        },
    )


@dataclass
class _Exists:
    node: ir.Exists

    def step(self, world: WorldState) -> Truth:
        hits: dict[Key, Hit] = {}
        s = self.node.subject
        for t in world.tracks:
            # Someone lying on the floor is still there when the background model loses them
            # for a moment; a walking person is not.
            recent = s.state == "lying" and world.ts - t.last_seen <= LYING_MEMORY_S
            if not (_present(t) or recent) or not matches(s, t, world):
                continue
            if t.kind is TrackKind.BLOB and ir.ANY_CLASS not in s.classes:
                continue
            since = None
            if s.state == "lying":
                since = t.lying_since
            elif s.state == "stationary":
                since = t.stationary_since
            hits[t.track_id] = _track_hit(t, since)
        return Truth(hits)


@dataclass
class _Count:
    node: ir.Count

    def step(self, world: WorldState) -> Truth:
        s = self.node.subject
        found = [
            t
            for t in world.tracks
            if _present(t) and t.kind is not TrackKind.BLOB and matches(s, t, world)
        ]
        n, want = len(found), self.node.n
        holds = {
            ">": n > want,
            ">=": n >= want,
            "<": n < want,
            "<=": n <= want,
            "==": n == want,
        }[self.node.op]
        score = max((t.score for t in found), default=1.0)
        return _scene(
            holds,
            Hit(
                score=round(score, 3),
                boxes=tuple((_label(t), t.box) for t in found),
                details={"count": n, "track_ids": sorted(t.track_id for t in found)},
            ),
        )


@dataclass
class _Unattended:
    node: ir.Unattended

    def step(self, world: WorldState) -> Truth:
        hits: dict[Key, Hit] = {}
        s = self.node.subject
        for o in world.objects():
            if o.unattended_since is None or o.placed_at is None:
                continue
            if not matches(s, o, world, lenient=True):
                continue
            widths = self.node.widths
            # another distance than the world model's: judge it from the owner's last box
            if (
                widths != 2.0
                and o.owner_box is not None
                and o.owner_box.gap(o.box) <= widths * max(o.box.width, 1.0)
            ):
                continue
            hits[o.track_id] = _track_hit(
                o,
                o.unattended_since,
                box=o.box.as_list(),
                placed_at=round(o.placed_at, 3),
                unattended_since=round(o.unattended_since, 3),
                owner_id=o.owner_id,
                owner_last_box=None if o.owner_box is None else o.owner_box.as_list(),
            )
        return Truth(hits)


@dataclass
class _Dwell:
    node: ir.Dwell
    since: dict[int, float] = field(default_factory=dict)

    def step(self, world: WorldState) -> Truth:
        s = self.node.subject
        here = {t.track_id: t for t in world.tracks if t.visible and matches(s, t, world)}
        for tid in list(self.since):
            if tid not in here and world.track(tid) is None:
                del self.since[tid]  # gone from the scene
        hits: dict[Key, Hit] = {}
        for tid, t in here.items():
            start = self.since.setdefault(tid, t.first_seen if s.zone is None else world.ts)
            if world.ts - start + 0.05 >= self.node.seconds:
                hits[tid] = _track_hit(t, start, dwell_s=round(world.ts - start, 1))
        return Truth(hits)


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
class _Transition:
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
                hits[track.track_id] = _track_hit(track, e.ts, scene_event=e.kind.value)
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
                hits[t.track_id] = _track_hit(t, t.fallen_at, fell_at=round(t.fallen_at, 3))
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
                hits[t.track_id] = _track_hit(t, world.ts)
            elif ev == "runs" and _running(t):
                speed = round(_speed(t) / max(t.box.height, 1.0), 2)
                hits[t.track_id] = _track_hit(t, None, heights_per_s=speed)
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


@dataclass
class _Motion:
    node: ir.Motion

    def step(self, world: WorldState) -> Truth:
        m = world.motion
        return _scene(
            m >= self.node.min_fraction,
            Hit(
                score=round(min(1.0, m / (self.node.min_fraction * 10)), 3),
                boxes=tuple(("motion", b) for b in world.moving_boxes),
                details={"motion": round(m, 4)},
            ),
        )


@dataclass
class _Dark:
    node: ir.Dark

    def step(self, world: WorldState) -> Truth:
        b = world.brightness
        return _scene(
            b < self.node.max_brightness, Hit(score=1.0, details={"brightness": round(b, 1)})
        )


def _local(ts: float, tz: dt.tzinfo | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz) if tz is not None else dt.datetime.fromtimestamp(ts)


@dataclass
class _Clock:
    node: ir.ClockWindow
    ctx: Context

    def step(self, world: WorldState) -> Truth:
        now = _local(world.ts, self.ctx.tz).time().replace(tzinfo=None)
        start, end = self.node.start, self.node.end
        inside = start <= now < end if start < end else (now >= start or now < end)
        return _scene(inside, Hit(score=1.0, details={"local_time": now.strftime("%H:%M:%S")}))


@dataclass
class _Days:
    node: ir.Days
    ctx: Context

    def step(self, world: WorldState) -> Truth:
        day = _WEEKDAYS[_local(world.ts, self.ctx.tz).weekday()]
        return _scene(day in self.node.days, Hit(score=1.0, details={"weekday": day}))


@dataclass
class _Scene:
    """Candidates for a scene predicate, which mean nothing until the VLM verifier confirms
    them (a rule with a scene predicate runs only where a verifier is configured).

    With the window on, a candidate is a frame whose window tokens match the text clearly
    better than this camera usually does (an adaptive baseline: mean + `_SCENE_K` standard
    deviations of the camera's recent scores); without it, any moment with the named subject
    in view, or with motion when it names none.
    """

    node: ir.Scene
    ctx: Context
    mean: float | None = None
    var: float = 0.0
    seen: int = 0
    last_ts: float | None = None

    def step(self, world: WorldState) -> Truth:
        s = self.node.subject
        if s is None:
            base = _scene(world.motion >= 0.005, Hit(score=0.5, details={"scene": self.node.text}))
        else:
            base = Truth(
                {
                    t.track_id: _track_hit(t, None, scene=self.node.text)
                    for t in world.tracks
                    if t.visible and t.kind is not TrackKind.BLOB and matches(s, t, world)
                }
            )
        if self.ctx.scene is None or not base.holds:
            return base
        scored = self.ctx.scene.score(self.node.text)
        if scored is None or scored[1] == self.last_ts:
            return Truth({}, base.scene_level)  # no new evidence from the window
        value, self.last_ts = scored
        unusual = self._unusual(value)
        if not unusual:
            return Truth({}, base.scene_level)
        extra = {"scene_score": round(value, 3), "scene_baseline": round(self.mean or 0.0, 3)}
        return Truth(
            {
                k: Hit(h.since, h.score, h.boxes, {**h.details, **extra})
                for k, h in base.hits.items()
            },
            base.scene_level,
        )

    def _unusual(self, value: float) -> bool:
        """Is this score well above the camera's usual? Updates the baseline (EMA)."""
        if self.mean is None:
            self.mean, self.seen = value, 1
            return False
        std = self.var**0.5
        unusual = self.seen >= _SCENE_WARMUP and value > self.mean + _SCENE_K * max(std, 0.01)
        alpha = 1.0 / min(self.seen + 1, _SCENE_MEMORY)
        delta = value - self.mean
        self.mean += alpha * delta
        self.var = (1 - alpha) * (self.var + alpha * delta * delta)
        self.seen += 1
        return unusual


def _merge(a: Hit, b: Hit) -> Hit:
    sinces = [s for s in (a.since, b.since) if s is not None]
    return Hit(
        since=max(sinces) if sinces else None,  # both hold from the later start
        score=max(a.score, b.score),
        boxes=a.boxes + tuple(x for x in b.boxes if x not in a.boxes),
        details={**b.details, **a.details},
    )


@dataclass
class _And:
    items: list[NodeEval]

    def step(self, world: WorldState) -> Truth:
        truths = [i.step(world) for i in self.items]  # every item steps: they keep state
        if not all(t.holds for t in truths):
            return Truth({}, scene_level=all(t.scene_level for t in truths))
        scene = [t for t in truths if t.scene_level]
        tracked = [t for t in truths if not t.scene_level]
        if not tracked:
            hit = Hit()
            for t in scene:
                hit = _merge(hit, t.hits[SCENE])
            return Truth({SCENE: hit}, scene_level=True)
        keys = set(tracked[0].hits)
        for t in tracked[1:]:
            keys &= set(t.hits)
        extra = Hit()
        for t in scene:
            extra = _merge(extra, t.hits[SCENE])
        if keys:
            out: dict[Key, Hit] = {}
            for k in keys:
                hit = extra
                for t in tracked:
                    hit = _merge(t.hits[k], hit)
                out[k] = hit
            return Truth(out)
        # Different things hold together ("a person and a car"): the scene is the subject.
        hit = extra
        for t in tracked:
            for h in t.hits.values():
                hit = _merge(hit, h)
        return Truth({SCENE: hit}, scene_level=True)


@dataclass
class _Or:
    items: list[NodeEval]

    def step(self, world: WorldState) -> Truth:
        truths = [i.step(world) for i in self.items]
        out: dict[Key, Hit] = {}
        for t in truths:
            for k, h in t.hits.items():
                out[k] = _merge(out[k], h) if k in out else h
        return Truth(out, scene_level=all(t.scene_level for t in truths))


@dataclass
class _Not:
    item: NodeEval

    def step(self, world: WorldState) -> Truth:
        inner = self.item.step(world)
        return _scene(not inner.holds, Hit(score=1.0))


@dataclass
class _Held:
    item: NodeEval
    seconds: float
    ctx: Context
    first: dict[Key, float] = field(default_factory=dict)
    last: dict[Key, float] = field(default_factory=dict)

    def step(self, world: WorldState) -> Truth:
        inner = self.item.step(world)
        now = world.ts
        for k in [k for k, t in self.last.items() if now - t > self.ctx.tolerance_s]:
            # missing for longer than a dropout: the clock starts again
            self.first.pop(k, None)
            self.last.pop(k, None)
        out: dict[Key, Hit] = {}
        for k, h in inner.hits.items():
            start = self.first.setdefault(k, now)
            if h.since is not None:
                start = min(start, h.since)
                self.first[k] = start
            self.last[k] = now
            if now - start + 0.1 >= self.seconds:  # 1 fps timestamps jitter by tens of ms
                out[k] = Hit(h.since if h.since is not None else start, h.score, h.boxes, h.details)
        return Truth(out, inner.scene_level)


@dataclass
class _Within:
    first: NodeEval
    then: NodeEval
    seconds: float
    seen: dict[Key, float] = field(default_factory=dict)
    any_seen: float | None = None

    def step(self, world: WorldState) -> Truth:
        a = self.first.step(world)
        b = self.then.step(world)
        now = world.ts
        for k in a.hits:
            self.seen[k] = now
            self.any_seen = now
        out: dict[Key, Hit] = {}
        for k, h in b.hits.items():
            when = self.seen.get(k) if not a.scene_level else self.any_seen
            if when is None and (b.scene_level or a.scene_level):
                when = self.any_seen
            if when is not None and now - when <= self.seconds:
                out[k] = h
        for k in [k for k, t in self.seen.items() if now - t > self.seconds]:
            del self.seen[k]
        return Truth(out, b.scene_level)


@dataclass
class _Times:
    item: NodeEval
    n: int
    seconds: float
    seen: deque[tuple[float, Key]] = field(default_factory=deque)
    active: set[Key] = field(default_factory=set)

    def step(self, world: WorldState) -> Truth:
        inner = self.item.step(world)
        now = world.ts
        for k in inner.hits:
            if k not in self.active:  # a new occurrence, not the same one still holding
                self.seen.append((now, k))
        self.active = set(inner.hits)
        while self.seen and now - self.seen[0][0] > self.seconds:
            self.seen.popleft()
        holds = len(self.seen) >= self.n
        return _scene(holds, Hit(score=1.0, details={"occurrences": len(self.seen)}))


def build(node: ir.Node, ctx: Context) -> NodeEval:
    """A fresh, stateful evaluator for one rule on one camera."""
    match node:
        case ir.Exists():
            return _Exists(node)
        case ir.Count():
            return _Count(node)
        case ir.Unattended():
            return _Unattended(node)
        case ir.Dwell():
            return _Dwell(node)
        case ir.Transition():
            return _Transition(node)
        case ir.Motion():
            return _Motion(node)
        case ir.Dark():
            return _Dark(node)
        case ir.ClockWindow():
            return _Clock(node, ctx)
        case ir.Days():
            return _Days(node, ctx)
        case ir.Scene():
            return _Scene(node, ctx)
        case ir.And():
            return _And([build(i, ctx) for i in node.items])
        case ir.Or():
            return _Or([build(i, ctx) for i in node.items])
        case ir.Not():
            return _Not(build(node.item, ctx))
        case ir.Held():
            return _Held(build(node.item, ctx), node.seconds, ctx)
        case ir.Within():
            return _Within(build(node.first, ctx), build(node.then, ctx), node.seconds)
        case ir.Times():
            return _Times(build(node.item, ctx), node.n, node.seconds)
    raise TypeError(f"not a rule node: {node!r}")  # pragma: no cover - the union is closed


def site_zone(name: str | None) -> dt.tzinfo | None:
    return None if name is None else zoneinfo.ZoneInfo(name)

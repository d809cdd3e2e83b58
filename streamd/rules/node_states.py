"""State nodes: something is there, how many, left unattended, dwelling, motion, darkness, the
clock and the day."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from streamd.perception.world import TrackKind, WorldState
from streamd.rules import ir
from streamd.rules.subjects import matches
from streamd.rules.truth import (
    Context,
    Hit,
    Key,
    Truth,
    label_of,
    present,
    scene_truth,
    track_hit,
)

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LYING_MEMORY_S = 2.5
_SCENE_K = 2.5  # standard deviations above the camera's usual score that make a candidate
_SCENE_WARMUP = 10  # scores before the baseline is trusted
_SCENE_MEMORY = 300  # frames the baseline averages over
RUN_HEIGHTS_PER_S = 1.8  # a person whose feet move this many body heights a second runs


@dataclass
class ExistsEval:
    node: ir.Exists

    def step(self, world: WorldState) -> Truth:
        hits: dict[Key, Hit] = {}
        s = self.node.subject
        for t in world.tracks:
            # Someone lying on the floor is still there when the background model loses them
            # for a moment; a walking person is not.
            recent = s.state == "lying" and world.ts - t.last_seen <= LYING_MEMORY_S
            if not (present(t) or recent) or not matches(s, t, world):
                continue
            if t.kind is TrackKind.BLOB and ir.ANY_CLASS not in s.classes:
                continue
            since = None
            if s.state == "lying":
                since = t.lying_since
            elif s.state == "stationary":
                since = t.stationary_since
            hits[t.track_id] = track_hit(t, since)
        return Truth(hits)


@dataclass
class CountEval:
    node: ir.Count

    def step(self, world: WorldState) -> Truth:
        s = self.node.subject
        found = [
            t
            for t in world.tracks
            if present(t) and t.kind is not TrackKind.BLOB and matches(s, t, world)
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
        return scene_truth(
            holds,
            Hit(
                score=round(score, 3),
                boxes=tuple((label_of(t), t.box) for t in found),
                details={"count": n, "track_ids": sorted(t.track_id for t in found)},
            ),
        )


@dataclass
class UnattendedEval:
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
            hits[o.track_id] = track_hit(
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
class DwellEval:
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
                hits[tid] = track_hit(t, start, dwell_s=round(world.ts - start, 1))
        return Truth(hits)


@dataclass
class MotionEval:
    node: ir.Motion

    def step(self, world: WorldState) -> Truth:
        m = world.motion
        return scene_truth(
            m >= self.node.min_fraction,
            Hit(
                score=round(min(1.0, m / (self.node.min_fraction * 10)), 3),
                boxes=tuple(("motion", b) for b in world.moving_boxes),
                details={"motion": round(m, 4)},
            ),
        )


@dataclass
class DarkEval:
    node: ir.Dark

    def step(self, world: WorldState) -> Truth:
        b = world.brightness
        return scene_truth(
            b < self.node.max_brightness, Hit(score=1.0, details={"brightness": round(b, 1)})
        )


def _local(ts: float, tz: dt.tzinfo | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz) if tz is not None else dt.datetime.fromtimestamp(ts)


@dataclass
class ClockEval:
    node: ir.ClockWindow
    ctx: Context

    def step(self, world: WorldState) -> Truth:
        now = _local(world.ts, self.ctx.tz).time().replace(tzinfo=None)
        start, end = self.node.start, self.node.end
        inside = start <= now < end if start < end else (now >= start or now < end)
        return scene_truth(inside, Hit(score=1.0, details={"local_time": now.strftime("%H:%M:%S")}))


@dataclass
class DaysEval:
    node: ir.Days
    ctx: Context

    def step(self, world: WorldState) -> Truth:
        day = _WEEKDAYS[_local(world.ts, self.ctx.tz).weekday()]
        return scene_truth(day in self.node.days, Hit(score=1.0, details={"weekday": day}))


@dataclass
class SceneEval:
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
            base = scene_truth(
                world.motion >= 0.005, Hit(score=0.5, details={"scene": self.node.text})
            )
        else:
            base = Truth(
                {
                    t.track_id: track_hit(t, None, scene=self.node.text)
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

"""Temporal logic at the event level: evaluations per subject → event changes.

World states are buffered into segments (default 2 s of frames) and each segment is evaluated
in order. Events are about a subject — a track (a person, a bag, a car) or the scene (counts,
motion): a new subject opens a new event, so two visitors ten seconds apart are two events.
An event opens when the rule holds for its subject (the rule's own temporal parts — held for,
within, N times in M — are in its plan), updates while it holds and its evidence grows, and
ends only after the rule has stopped holding for that subject for `clear_s` (hysteresis).
Cooldown keeps the same subject from re-alerting, never a different one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from streamd.config import RuleConfig
from streamd.events.change import EventChange, Snapshot, new_event_id
from streamd.perception.world import WorldState
from streamd.rules.evaluate import Context, Hit, Key, SceneScorer
from streamd.rules.plan import Plan

log = logging.getLogger(__name__)

_EVIDENCE_FRAMES = 3  # frames of the opening segment kept for a verifier


@dataclass
class _Active:
    event_id: str
    key: Key
    start: float
    top_score: float
    score: float
    last_true: float
    details: dict[str, object]
    entered: set[str] = field(default_factory=set)  # zones the subject was in during the event


@dataclass
class RuleRunner:
    """One rule on one camera."""

    camera: str
    rule: RuleConfig
    plan: Plan
    tz: dt.tzinfo | None = None
    scene: SceneScorer | None = None  # the camera's window, for scene predicates
    active: dict[Key, _Active] = field(default_factory=dict)
    last_end: dict[Key, float] = field(default_factory=dict)
    evaluations: int = 0
    holding_since: float | None = None
    recent: list[WorldState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.evaluator = self.plan.evaluator(
            Context(self.tz, tolerance_s=self.rule.clear_s, scene=self.scene)
        )

    def step(self, world: WorldState) -> list[EventChange]:
        self.evaluations += 1
        now = world.ts
        self.recent = [*self.recent[-(_EVIDENCE_FRAMES - 1) :], world]
        truth = self.evaluator.step(world)
        if truth.holds:
            if self.holding_since is None:
                self.holding_since = now
        else:
            self.holding_since = None
        out: list[EventChange] = []
        for key, hit in truth.hits.items():
            act = self.active.get(key)
            if act is not None:
                act.last_true = now
                zones = _zones(hit)
                news = bool(zones - act.entered)
                act.entered |= zones
                if (
                    hit.score > act.top_score + 0.05
                    or news
                    or _material_change(act.details, hit.details)
                ):
                    act.top_score = max(act.top_score, hit.score)
                    act.score = hit.score
                    act.details = dict(hit.details)
                    out.append(self._change("update", act, None))
                continue
            ended = self.last_end.get(key)
            if ended is not None and now - ended < self.rule.cooldown_s:
                continue
            out.append(self._open(world, key, hit))
        for key, act in list(self.active.items()):
            if key not in truth.hits and now - act.last_true >= self.rule.clear_s:
                out.append(self._end(key, now))
        for key in [k for k, t in self.last_end.items() if now - t >= self.rule.cooldown_s]:
            del self.last_end[key]
        return out

    def _open(self, world: WorldState, key: Key, hit: Hit) -> EventChange:
        start = hit.since if hit.since is not None else world.ts
        act = _Active(
            new_event_id(start),
            key,
            start,
            hit.score,
            hit.score,
            world.ts,
            dict(hit.details),
            _zones(hit),
        )
        self.active[key] = act
        log.info("camera %s: rule %s fired (%s)", self.camera, self.rule.name, self.plan.describe())
        evidence = tuple(w.frame.image for w in self.recent)
        return self._change("new", act, Snapshot(world.frame.image, hit.boxes, evidence))

    def _end(self, key: Key, now: float) -> EventChange:
        act = self.active.pop(key)
        self.last_end[key] = now
        return self._change("end", act, None, end_time=now)

    def close(self, now: float) -> list[EventChange]:
        """End every open event (daemon shutdown, rule removed)."""
        return [self._end(key, now) for key in list(self.active)]

    def state(self) -> dict[str, object]:
        """Live state for GET /api/rules."""
        return {
            "camera": self.camera,
            "holding_since": self.holding_since,
            "active_events": [a.event_id for a in self.active.values()],
            "evaluations": self.evaluations,
        }

    def _change(
        self, kind: str, act: _Active, snapshot: Snapshot | None, end_time: float | None = None
    ) -> EventChange:
        return EventChange(
            kind=kind,  # type: ignore[arg-type]
            event_id=act.event_id,
            camera=self.camera,
            rule_name=self.rule.name,
            rule_text=self.rule.text,
            start_time=act.start,
            end_time=end_time,
            score=act.score,
            top_score=act.top_score,
            snapshot=snapshot,
            details={
                "plan": self.plan.describe(),
                "severity": self.rule.severity,
                "subject": act.key,
                **act.details,
                "entered_zones": sorted(act.entered),
            },
        )


def _zones(hit: Hit) -> set[str]:
    zones = hit.details.get("zones")
    return {str(z) for z in zones} if isinstance(zones, list) else set()


def _material_change(old: dict[str, object], new: dict[str, object]) -> bool:
    """Counts changing is news; a box moving by a pixel is not."""
    return old.get("count") != new.get("count") or old.get("object") != new.get("object")


@dataclass
class RulesEngine:
    """All rules of one camera, evaluated segment by segment."""

    camera: str
    runners: list[RuleRunner]
    segment_s: float = 2.0
    _buffer: list[WorldState] = field(default_factory=list)
    _segment_start: float | None = None

    def feed(self, world: WorldState) -> list[EventChange]:
        """Add a world state; return the changes of every segment it completes."""
        if self._segment_start is None:
            self._segment_start = world.ts
        self._buffer.append(world)
        if world.ts - self._segment_start + 1e-3 < self.segment_s:
            return []
        return self.flush()

    def flush(self) -> list[EventChange]:
        batch, self._buffer = self._buffer, []
        self._segment_start = None
        out: list[EventChange] = []
        for world in batch:
            for runner in self.runners:
                out.extend(runner.step(world))
        return out

    def close(self, now: float) -> list[EventChange]:
        out = self.flush()
        for runner in self.runners:
            out.extend(runner.close(now))
        return out

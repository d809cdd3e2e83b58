"""Temporal logic: observations → event changes, per rule and camera.

World states are buffered into segments (default 2 s of frames) and each segment is evaluated in
order. An event opens when the plan has held for its duration (and the rule is out of cooldown),
updates while it holds and its evidence grows, and ends only after the plan has stopped holding
for `clear_s` (hysteresis, so one missed detection does not split an event in two).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from streamd.config import RuleConfig
from streamd.events.change import EventChange, Snapshot, new_event_id
from streamd.perception.world import WorldState
from streamd.rules.plan import Plan, Verdict

log = logging.getLogger(__name__)

# Timestamps of 1 fps samples jitter by tens of milliseconds; "for 5 seconds" must not need 6.
_TOLERANCE_S = 0.1


@dataclass
class _Active:
    event_id: str
    start: float
    top_score: float
    score: float
    last_true: float
    details: dict[str, object]


@dataclass
class RuleRunner:
    """One rule on one camera."""

    camera: str
    rule: RuleConfig
    plan: Plan
    true_since: float | None = None
    last_true: float | None = None
    active: _Active | None = None
    last_end: float | None = None
    evaluations: int = 0

    def step(self, obs: WorldState) -> list[EventChange]:
        self.evaluations += 1
        verdict = self.plan.evaluate(obs)
        now = obs.ts
        if verdict.holds:
            self.last_true = now
            return self._holding(obs, verdict, now)
        # A dropout shorter than clear_s (one missed detection) does not restart the clock,
        # or "for 10 seconds" would never be reached on a flickering detector.
        if self.last_true is None or now - self.last_true >= self.rule.clear_s:
            self.true_since = None
        if self.active is not None and now - self.active.last_true >= self.rule.clear_s:
            return [self._end(now)]
        return []

    def _holding(self, obs: WorldState, v: Verdict, now: float) -> list[EventChange]:
        if self.true_since is None:
            self.true_since = now
        act = self.active
        if act is not None:
            act.last_true = now
            if v.score > act.top_score + 0.05 or _material_change(act.details, v.details):
                act.top_score = max(act.top_score, v.score)
                act.score = v.score
                act.details = dict(v.details)
                return [self._change("update", act, None)]
            return []
        hold_from = v.hold_from if v.hold_from is not None else self.true_since
        if now - hold_from + _TOLERANCE_S < self.plan.hold_s:
            return []
        if self.last_end is not None and now - self.last_end < self.rule.cooldown_s:
            return []
        start = v.started if v.started is not None else hold_from
        act = _Active(new_event_id(start), start, v.score, v.score, now, dict(v.details))
        self.active = act
        log.info("camera %s: rule %s fired (%s)", self.camera, self.rule.name, self.plan.describe())
        return [self._change("new", act, Snapshot(obs.frame.image, v.boxes))]

    def _end(self, now: float) -> EventChange:
        act = self.active
        assert act is not None
        self.active = None
        self.last_end = now
        return self._change("end", act, None, end_time=now)

    def close(self, now: float) -> list[EventChange]:
        """End an open event (daemon shutdown)."""
        return [self._end(now)] if self.active is not None else []

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
            details={"plan": self.plan.describe(), "severity": self.rule.severity, **act.details},
        )


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

    def feed(self, obs: WorldState) -> list[EventChange]:
        """Add an observation; return the changes of every segment it completes."""
        if self._segment_start is None:
            self._segment_start = obs.ts
        self._buffer.append(obs)
        if obs.ts - self._segment_start + 1e-3 < self.segment_s:
            return []
        return self.flush()

    def flush(self) -> list[EventChange]:
        batch, self._buffer = self._buffer, []
        self._segment_start = None
        out: list[EventChange] = []
        for obs in batch:
            for runner in self.runners:
                out.extend(runner.step(obs))
        return out

    def close(self, now: float) -> list[EventChange]:
        out = self.flush()
        for runner in self.runners:
            out.extend(runner.close(now))
        return out

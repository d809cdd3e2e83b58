"""Compiled rule plans: predicates over one Observation, each able to explain itself."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from streamd.rules.vocab import ANY, describe_classes
from streamd.window.analysis import Observation
from streamd.window.detection import Box

CompareOp = Literal[">", ">=", "<", "<=", "=="]
_OPS: dict[str, Callable[[int, int], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a predicate holds on one observation, and the evidence.

    `hold_from` lets a predicate say since when it has held by its own memory (a left object
    knows when it was last attended), `started` when the event it describes began (when the
    object was left); both default to what the temporal logic saw.
    """

    holds: bool
    score: float = 0.0
    boxes: tuple[tuple[str, Box], ...] = ()
    hold_from: float | None = None
    started: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Predicate(Protocol):
    def describe(self) -> str: ...

    def evaluate(self, obs: Observation) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Count:
    """count(classes) OP n over the frame's detections."""

    classes: frozenset[str]
    op: CompareOp
    n: int
    noun: str

    def describe(self) -> str:
        if self.op == "==" and self.n == 0:
            return f"¬object({describe_classes(self.classes)})"
        if self.op == ">=" and self.n == 1:
            return f"object({describe_classes(self.classes)})"
        return f"count({describe_classes(self.classes)}) {self.op} {self.n}"

    def evaluate(self, obs: Observation) -> Verdict:
        hits = [d for d in obs.detections if d.label in self.classes]
        holds = _OPS[self.op](len(hits), self.n)
        score = (1.0 if holds else 0.0) if not hits else max(d.score for d in hits)
        return Verdict(
            holds=holds,
            score=round(score, 3),
            boxes=tuple((d.label, d.box) for d in hits),
            details={"count": len(hits)},
        )


@dataclass(frozen=True, slots=True)
class LeftObject:
    """A new object that stays still with no one within `proximity` object widths for
    `unattended_s`, found class-agnostically from static foreground and labelled by the detector
    where it can. A candidate the detector labels as something else (a parked car for a bag
    rule) does not count; an unlabelled one does."""

    classes: frozenset[str]
    unattended_s: float
    proximity: float = 2.0
    noun: str = "object"

    def describe(self) -> str:
        return (
            f"object({describe_classes(self.classes)}) ∧ stationary ∧ "
            f"¬near(person, {self.proximity:g} widths) held for ≥ {self.unattended_s:g} s"
        )

    def evaluate(self, obs: Observation) -> Verdict:
        best = None
        for o in obs.scene.static_objects:
            if self.classes != ANY and o.label != "object" and o.label not in self.classes:
                continue
            unattended = obs.ts - o.last_attended
            if unattended + 0.05 >= self.unattended_s and (best is None or o.since < best.since):
                best = o
        if best is None:
            return Verdict(holds=False)
        return Verdict(
            holds=True,
            score=round(max(best.score, 0.5), 3),
            boxes=((best.label, best.box),),
            hold_from=best.last_attended,
            started=best.since,
            details={
                "object": best.label,
                "box": best.box.as_list(),
                "stationary_since": round(best.since, 3),
                "unattended_since": round(best.last_attended, 3),
                "track_id": best.track_id,
            },
        )


@dataclass(frozen=True, slots=True)
class Motion:
    """Moving foreground covers at least `min_fraction` of the frame."""

    min_fraction: float = 0.005

    def describe(self) -> str:
        return f"motion ≥ {self.min_fraction:.1%} of frame"

    def evaluate(self, obs: Observation) -> Verdict:
        m = obs.scene.motion
        return Verdict(
            holds=m >= self.min_fraction,
            score=round(min(1.0, m / (self.min_fraction * 10)), 3),
            boxes=tuple(("motion", b) for b in obs.scene.moving_boxes),
            details={"motion": round(m, 4)},
        )


@dataclass(frozen=True, slots=True)
class Dark:
    """The scene is dark ("after dark", "at night"): mean brightness under a threshold."""

    max_brightness: float = 60.0

    def describe(self) -> str:
        return f"dark(brightness < {self.max_brightness:g})"

    def evaluate(self, obs: Observation) -> Verdict:
        b = obs.scene.brightness
        return Verdict(holds=b < self.max_brightness, score=1.0, details={"brightness": b})


@dataclass(frozen=True, slots=True)
class Plan:
    """A compiled rule: a main predicate, extra conditions (all must hold), and a duration."""

    text: str
    predicate: Predicate
    conditions: tuple[Predicate, ...] = ()
    hold_s: float = 0.0

    def describe(self) -> str:
        parts = [self.predicate.describe(), *(c.describe() for c in self.conditions)]
        out = " ∧ ".join(parts)
        if self.hold_s > 0:
            out = (
                f"({out}) held for ≥ {self.hold_s:g} s"
                if self.conditions
                else (f"{out} held for ≥ {self.hold_s:g} s")
            )
        return out

    def evaluate(self, obs: Observation) -> Verdict:
        main = self.predicate.evaluate(obs)
        if not main.holds:
            return main
        for cond in self.conditions:
            v = cond.evaluate(obs)
            if not v.holds:
                return Verdict(holds=False, details={**main.details, **v.details})
        return main

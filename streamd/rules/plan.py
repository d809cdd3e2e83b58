"""Compiled rule plans: predicates over one WorldState, each able to explain itself."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from streamd.perception.geometry import Box
from streamd.perception.world import Posture, TrackKind, WorldState
from streamd.rules.vocab import ANY, describe_classes

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

    def evaluate(self, obs: WorldState) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Count:
    """count(classes) OP n over the tracks seen in the frame."""

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

    def evaluate(self, obs: WorldState) -> Verdict:
        hits = [
            t
            for t in obs.tracks
            if t.visible and t.kind is TrackKind.DETECTED and t.label in self.classes
        ]
        holds = _OPS[self.op](len(hits), self.n)
        score = (1.0 if holds else 0.0) if not hits else max(t.score for t in hits)
        return Verdict(
            holds=holds,
            score=round(score, 3),
            boxes=tuple((t.label or "object", t.box) for t in hits),
            details={"count": len(hits), "track_ids": sorted(t.track_id for t in hits)},
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

    def evaluate(self, obs: WorldState) -> Verdict:
        best = None
        for o in obs.objects():
            if o.unattended_since is None or o.placed_at is None:
                continue
            if self.classes != ANY and o.label is not None and o.label not in self.classes:
                continue
            unattended = obs.ts - o.unattended_since
            if unattended + 0.05 >= self.unattended_s and (
                best is None or o.placed_at < (best.placed_at or 0.0)
            ):
                best = o
        if best is None or best.unattended_since is None or best.placed_at is None:
            return Verdict(holds=False)
        label = best.label or "object"
        return Verdict(
            holds=True,
            score=round(max(best.score, 0.5), 3),
            boxes=((label, best.box),),
            hold_from=best.unattended_since,
            started=best.unattended_since,
            details={
                "object": label,
                "box": best.box.as_list(),
                "track_id": best.track_id,
                "placed_at": round(best.placed_at, 3),
                "unattended_since": round(best.unattended_since, 3),
                "owner_id": best.owner_id,
                "owner_last_box": None if best.owner_box is None else best.owner_box.as_list(),
            },
        )


@dataclass(frozen=True, slots=True)
class Fallen:
    """A person fell (upright → down fast, still down a moment later) and has not got up.

    Holds from the fall's onset until the person is upright again or gone."""

    def describe(self) -> str:
        return "fell(person) ∧ ¬got_up"

    def evaluate(self, obs: WorldState) -> Verdict:
        down = [t for t in obs.tracks if t.label == "person" and t.fallen_at is not None]
        if not down:
            return Verdict(holds=False)
        first = min(down, key=lambda t: t.fallen_at or 0.0)
        assert first.fallen_at is not None
        return Verdict(
            holds=True,
            score=round(max(first.score, 0.5), 3),
            boxes=tuple(("person", t.box) for t in down),
            hold_from=first.fallen_at,
            started=first.fallen_at,
            details={"track_id": first.track_id, "fell_at": round(first.fallen_at, 3)},
        )


@dataclass(frozen=True, slots=True)
class Lying:
    """A person lies (fallen or on purpose) for `lying_s`; getting up ends it."""

    lying_s: float

    def describe(self) -> str:
        return f"posture(person) = lying held for ≥ {self.lying_s:g} s"

    def evaluate(self, obs: WorldState) -> Verdict:
        lying = [
            t
            for t in obs.tracks
            if t.label == "person"
            and t.posture is Posture.LYING
            and t.lying_since is not None
            and obs.ts - t.last_seen < 2.5
        ]
        long = [t for t in lying if obs.ts - (t.lying_since or obs.ts) + 0.05 >= self.lying_s]
        if not long:
            return Verdict(holds=False)
        first = min(long, key=lambda t: t.lying_since or 0.0)
        since = first.lying_since
        assert since is not None
        return Verdict(
            holds=True,
            score=round(max(first.score, 0.5), 3),
            boxes=tuple(("person", t.box) for t in long),
            hold_from=since,
            started=since,
            details={"track_id": first.track_id, "lying_since": round(since, 3)},
        )


@dataclass(frozen=True, slots=True)
class Motion:
    """Moving foreground covers at least `min_fraction` of the frame."""

    min_fraction: float = 0.005

    def describe(self) -> str:
        return f"motion ≥ {self.min_fraction:.1%} of frame"

    def evaluate(self, obs: WorldState) -> Verdict:
        m = obs.motion
        return Verdict(
            holds=m >= self.min_fraction,
            score=round(min(1.0, m / (self.min_fraction * 10)), 3),
            boxes=tuple(("motion", b) for b in obs.moving_boxes),
            details={"motion": round(m, 4)},
        )


@dataclass(frozen=True, slots=True)
class Dark:
    """The scene is dark ("after dark", "at night"): mean brightness under a threshold."""

    max_brightness: float = 60.0

    def describe(self) -> str:
        return f"dark(brightness < {self.max_brightness:g})"

    def evaluate(self, obs: WorldState) -> Verdict:
        b = obs.brightness
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

    def evaluate(self, obs: WorldState) -> Verdict:
        main = self.predicate.evaluate(obs)
        if not main.holds:
            return main
        for cond in self.conditions:
            v = cond.evaluate(obs)
            if not v.holds:
                return Verdict(holds=False, details={**main.details, **v.details})
        return main

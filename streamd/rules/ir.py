"""The typed rule IR: what a rule means, independent of how it was written.

A rule is a tree of nodes evaluated over the world model (one WorldState per sampled frame):
states (a track exists, a count, unattended, dwell, motion, dark, a clock window, days), scene
events (transitions: appears, enters, crosses…), combinators (and, or, not) and temporal
wrappers (held for, within, N times in M). Text rules are parsed into this tree (parser.py);
a rule may also be written as the tree itself in YAML (`parse_ir`). Every model is frozen and
rejects unknown keys, and the node union is discriminated by `kind`, so a YAML typo is an error
that names the key instead of a silently different rule.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamd.errors import RuleCompileError
from streamd.perception.coco import COCO_CLASSES

__all__ = [
    "ANY_CLASS",
    "COLOURS",
    "UNLABELLED",
    "And",
    "ClockWindow",
    "Count",
    "Dark",
    "Days",
    "Dwell",
    "Exists",
    "Held",
    "Motion",
    "Node",
    "Not",
    "Or",
    "Relation",
    "RuleIR",
    "Scene",
    "Subject",
    "Times",
    "Transition",
    "Unattended",
    "Within",
    "WordMapping",
    "needs_verifier",
    "parse_ir",
]

# "any object": every class, and foreground the detector could not label.
ANY_CLASS = "*"
# Static foreground (a placed or removed thing) that the detector gave no COCO class.
UNLABELLED = "unlabelled"
KNOWN_CLASSES = frozenset(COCO_CLASSES) | {ANY_CLASS, UNLABELLED}

# The colour names the world model's colour attribute uses (basic colour terms).
COLOURS: tuple[str, ...] = (
    "black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink",
    "brown",
)  # fmt: skip
Colour = Literal[
    "black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown"
]  # fmt: skip
# moving / stationary for any track; upright / low / lying are a person's posture.
TrackState = Literal["moving", "stationary", "upright", "low", "lying"]
CompareOp = Literal[">", ">=", "<", "<=", "=="]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Event = Literal[
    "appears", "leaves", "enters", "exits", "crosses", "placed", "removed", "falls", "gets_up",
    "stops", "starts_moving", "runs",
]  # fmt: skip

Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600, description="seconds")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _class_set(value: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [c for c in value if c not in KNOWN_CLASSES]
    if unknown:
        raise ValueError(
            f"unknown class(es) {', '.join(map(repr, unknown))}: use COCO class names "
            f"(person, car, backpack…), {UNLABELLED!r} or {ANY_CLASS!r}"
        )
    if ANY_CLASS in value and len(value) > 1:
        raise ValueError(f"{ANY_CLASS!r} (any object) already includes every other class")
    return tuple(sorted(set(value)))


class Relation(_Model):
    """The subject's box is on / near a track of another class ("a dog on the sofa")."""

    kind: Literal["on", "near"]
    classes: tuple[str, ...] = Field(min_length=1)

    _check = field_validator("classes")(_class_set)


class Subject(_Model):
    """An object query: which tracks a node is about."""

    classes: tuple[str, ...] = Field(min_length=1, description="COCO classes (any of them)")
    colour: Colour | None = None
    zone: str | None = Field(None, min_length=1, description="a zone of the camera's config")
    state: TrackState | None = None
    relation: Relation | None = None
    verify: str | None = Field(
        None, min_length=1, description="an attribute the world model lacks ('child'): VLM only"
    )

    _check = field_validator("classes")(_class_set)

    @model_validator(mode="after")
    def _posture_is_human(self) -> Subject:
        if self.state in ("upright", "low", "lying") and self.classes != ("person",):
            raise ValueError(f"posture {self.state!r} is known for people only")
        return self


class Exists(_Model):
    """Some track matching the subject is there (one event per track)."""

    kind: Literal["exists"] = "exists"
    subject: Subject


class Count(_Model):
    """The number of tracks matching the subject compared with n (one event for the scene)."""

    kind: Literal["count"] = "count"
    subject: Subject
    op: CompareOp
    n: int = Field(ge=0, le=1000)


class Unattended(_Model):
    """An object left with its owner (or, without one, every person) > `widths` object widths
    away; how long comes from an enclosing `held`."""

    kind: Literal["unattended"] = "unattended"
    subject: Subject
    widths: float = Field(2.0, gt=0, le=100)


class Dwell(_Model):
    """One track stays in the subject's zone (the whole view when it has none) for `seconds`."""

    kind: Literal["dwell"] = "dwell"
    subject: Subject
    seconds: Seconds


class Transition(_Model):
    """A scene event about a track, happening at one instant."""

    kind: Literal["transition"] = "transition"
    event: Event
    subject: Subject
    zone: str | None = Field(None, min_length=1, description="enters / exits: the zone")
    line: str | None = Field(None, min_length=1, description="crosses: the line")
    direction: Literal["in", "out"] | None = Field(None, description="crosses: which way")

    @model_validator(mode="after")
    def _fields_fit_event(self) -> Transition:
        if self.event in ("enters", "exits"):
            if self.zone is None:
                raise ValueError(f"{self.event!r} needs a zone")
        elif self.zone is not None:
            raise ValueError("only enters / exits take a zone; put it on the subject instead")
        if self.event == "crosses":
            if self.line is None:
                raise ValueError("'crosses' needs a line")
        elif self.line is not None or self.direction is not None:
            raise ValueError("only 'crosses' takes a line and a direction")
        return self


class Motion(_Model):
    """Moving foreground covers at least `min_fraction` of the frame."""

    kind: Literal["motion"] = "motion"
    min_fraction: float = Field(0.005, gt=0, le=1)


class Dark(_Model):
    """The picture is dark: mean brightness (0-255) under a threshold. "After dark" and "at
    night" mean this, not the clock (a lit car park at 23:00 is not dark)."""

    kind: Literal["dark"] = "dark"
    max_brightness: float = Field(60.0, gt=0, le=255)


def _clock(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 23:00 as the sexagesimal integer 1380
    if isinstance(value, int | float):
        raise ValueError("write clock times as quoted 'HH:MM' strings ('23:00')")
    return value


class ClockWindow(_Model):
    """Local time of day in [start, end) in the site's time zone (given at evaluation); an end
    at or before the start wraps past midnight ("between 23:00 and 06:00")."""

    kind: Literal["clock"] = "clock"
    start: dt.time
    end: dt.time

    _check = field_validator("start", "end", mode="before")(_clock)

    @model_validator(mode="after")
    def _not_empty(self) -> ClockWindow:
        if self.start == self.end:
            raise ValueError("the window is empty: start and end are the same time")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("clock times are in the site's time zone; give no offset")
        return self


class Days(_Model):
    """Local days of the week (site's time zone)."""

    kind: Literal["days"] = "days"
    days: tuple[Weekday, ...] = Field(min_length=1)

    @field_validator("days")
    @classmethod
    def _ordered(cls, value: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        return tuple(d for d in WEEKDAYS if d in value)


class Scene(_Model):
    """Free text with no structured meaning ("smoke or fire"): scored on the window's tokens and
    confirmed by the VLM verifier; `subject`, where the text names one, narrows candidates."""

    kind: Literal["scene"] = "scene"
    text: str = Field(min_length=1, max_length=500, pattern=r'^[^"“”]*$')
    subject: Subject | None = None


class And(_Model):
    kind: Literal["and"] = "and"
    items: tuple[Node, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _one_days(self) -> And:
        if sum(isinstance(i, Days) for i in self.items) > 1:
            raise ValueError("list every day in one 'days' node (two would never both hold)")
        return self


class Or(_Model):
    kind: Literal["or"] = "or"
    items: tuple[Node, ...] = Field(min_length=2)


class Not(_Model):
    kind: Literal["not"] = "not"
    item: Node


def _is_instant(node: BaseModel) -> bool:
    return isinstance(node, Transition | Within | Times)


class Held(_Model):
    """The item holds continuously for at least `seconds`."""

    kind: Literal["held"] = "held"
    item: Node
    seconds: Seconds

    @model_validator(mode="after")
    def _state_only(self) -> Held:
        if _is_instant(self.item):
            raise ValueError(
                "an event happens at an instant and cannot be held for a time; "
                "use a state (present, stationary, lying…)"
            )
        return self


class Within(_Model):
    """`then` happens (or holds) within `seconds` after `first` did."""

    kind: Literal["within"] = "within"
    first: Node
    then: Node
    seconds: Seconds


class Times(_Model):
    """The event happens at least `n` times within a sliding `seconds` window."""

    kind: Literal["times"] = "times"
    item: Node
    n: int = Field(ge=1, le=1000)
    seconds: Seconds

    @model_validator(mode="after")
    def _event_only(self) -> Times:
        if not isinstance(self.item, Transition):
            raise ValueError("'N times in M' counts events (appears, enters, crosses…)")
        return self


Node = Annotated[
    Exists | Count | Unattended | Dwell | Transition | Motion | Dark | ClockWindow | Days | Scene
    | And | Or | Not | Held | Within | Times,
    Field(discriminator="kind"),
]  # fmt: skip

for _m in (And, Or, Not, Held, Within, Times):
    _m.model_rebuild()


class WordMapping(_Model):
    """How a word the user wrote became detector classes; shown in the plan."""

    word: str
    classes: tuple[str, ...]
    source: Literal["synonym", "minilm"]
    score: float | None = Field(None, description="MiniLM cosine similarity")


class RuleIR(_Model):
    """A parsed rule: the tree, how its words were mapped, and the defaults it relied on."""

    version: Literal[1] = 1
    root: Node
    mappings: tuple[WordMapping, ...] = ()
    notes: tuple[str, ...] = ()


def walk(node: Node) -> list[Node]:
    """Every node of the tree, depth first."""
    out: list[Node] = [node]
    if isinstance(node, And | Or):
        for item in node.items:
            out += walk(item)
    elif isinstance(node, Not | Held | Times):
        out += walk(node.item)
    elif isinstance(node, Within):
        out += walk(node.first) + walk(node.then)
    return out


def needs_verifier(ir: RuleIR) -> list[str]:
    """Why this rule cannot run without a VLM verifier (empty: it can)."""
    reasons: list[str] = []
    for node in walk(ir.root):
        if isinstance(node, Scene):
            reasons.append(f"scene predicate {node.text!r}")
        subject = getattr(node, "subject", None)
        if isinstance(subject, Subject) and subject.verify:
            reasons.append(f"attribute {subject.verify!r}")
    return reasons


def parse_ir(data: object) -> RuleIR:
    """A rule written as structured YAML (the IR itself) → RuleIR, or RuleCompileError naming
    each bad key by its path."""
    try:
        return RuleIR.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(rule)"
            problems.append(f"{loc}: {err['msg']}")
        raise RuleCompileError(
            "<structured rule>", [], [], "invalid rule IR: " + "; ".join(problems)
        ) from exc

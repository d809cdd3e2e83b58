"""RuleIR → plain words: the plan `streamd check` shows.

The words are themselves rule text the parser reads back to the same tree (tested), so what a
user sees is exactly what runs: "backpack|handbag|suitcase left unattended (owner > 2 widths
away) held for ≥ 30 s". Compound parts are parenthesised so the reading is never ambiguous.
"""

from __future__ import annotations

import datetime as dt

from streamd.rules.ir import (
    ANY_CLASS,
    WEEKDAYS,
    And,
    ClockWindow,
    Count,
    Dark,
    Days,
    Dwell,
    Exists,
    Held,
    Motion,
    Node,
    Not,
    Or,
    RuleIR,
    Scene,
    Subject,
    Times,
    Transition,
    Unattended,
    Within,
    needs_verifier,
)

__all__ = ["describe", "duration", "explain"]

_OPS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "="}
_DAY_NAMES = dict(
    zip(
        WEEKDAYS,
        ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        strict=True,
    )
)
_EVENTS = {
    "appears": "appears",
    "leaves": "leaves",
    "placed": "placed",
    "removed": "removed",
    "falls": "falls",
    "gets_up": "gets up",
    "stops": "stops",
    "starts_moving": "starts moving",
    "runs": "runs",
}
_ATOMS = (Exists, Count, Unattended, Transition, Motion, Dark, ClockWindow, Days, Scene)


def duration(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _clock(t: dt.time) -> str:
    return f"{t:%H:%M}"


def _classes(classes: tuple[str, ...]) -> str:
    return "any object" if classes == (ANY_CLASS,) else "|".join(classes)


def subject(s: Subject, *, with_zone: bool = True) -> str:
    parts: list[str] = [p for p in (s.colour, s.state) if p]
    parts.append(_classes(s.classes))
    if s.relation is not None:
        parts.append(f"{s.relation.kind} {_classes(s.relation.classes)}")
    if with_zone and s.zone is not None:
        parts.append(f"in zone {s.zone}")
    if s.verify:
        parts.append(f'verified as "{s.verify}"')
    return " ".join(parts)


def _part(node: Node) -> str:
    text = describe(node)
    return text if isinstance(node, _ATOMS) else f"({text})"


def describe(node: Node) -> str:
    """One node (and everything under it) in words the parser reads back."""
    match node:
        case Exists():
            return f"{subject(node.subject)} present"
        case Count():
            return f"count({subject(node.subject)}) {_OPS[node.op]} {node.n}"
        case Unattended():
            return f"{subject(node.subject)} left unattended (owner > {node.widths:g} widths away)"
        case Dwell():
            where = f"in zone {node.subject.zone}" if node.subject.zone else "in view"
            return (
                f"{subject(node.subject, with_zone=False)} stays {where} "
                f"for ≥ {duration(node.seconds)}"
            )
        case Transition():
            return _transition(node)
        case Motion():
            default = Motion().min_fraction
            if node.min_fraction == default:
                return "motion"
            return f"motion (≥ {node.min_fraction * 100:g}%)"
        case Dark():
            return f"dark (brightness < {node.max_brightness:g})"
        case ClockWindow():
            return f"between {_clock(node.start)} and {_clock(node.end)}"
        case Days():
            if node.days == WEEKDAYS[:5]:
                return "on weekdays"
            if node.days == WEEKDAYS[5:]:
                return "at weekends"
            return "on " + "|".join(_DAY_NAMES[d] for d in node.days)
        case Scene():
            out = f'scene "{node.text}"'
            return out + (f" (candidates {subject(node.subject)})" if node.subject else "")
        case And():
            return " and ".join(_part(i) for i in node.items)
        case Or():
            return " or ".join(_part(i) for i in node.items)
        case Not():
            # always parenthesised: "not moving" would read as the state "stationary"
            return f"not ({describe(node.item)})"
        case Held():
            return f"{_part(node.item)} held for ≥ {duration(node.seconds)}"
        case Within():
            return f"{_part(node.first)} then {_part(node.then)} within {duration(node.seconds)}"
        case Times():
            return f"{_part(node.item)} {node.n} times in {duration(node.seconds)}"
    raise TypeError(f"not a rule node: {node!r}")  # pragma: no cover - the union is closed


def _transition(t: Transition) -> str:
    who = subject(t.subject)
    if t.event in ("enters", "exits"):
        return f"{who} {t.event} zone {t.zone}"
    if t.event == "crosses":
        way = {"in": " inwards", "out": " outwards", None: ""}[t.direction]
        return f"{who} crosses line {t.line}{way}"
    return f"{who} {_EVENTS[t.event]}"


def explain(ir: RuleIR) -> list[str]:
    """The plan in words, then how words were mapped, the defaults used, and what it needs."""
    out = [describe(ir.root)]
    for m in ir.mappings:
        how = "synonym" if m.source == "synonym" else f"MiniLM {m.score:.2f}"
        out.append(f"{m.word} → {_classes(m.classes)} ({how})")
    out += list(ir.notes)
    reasons = needs_verifier(ir)
    if reasons:
        out.append("needs a VLM verifier: " + "; ".join(reasons))
    return out

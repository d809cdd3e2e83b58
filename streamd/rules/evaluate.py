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

from streamd.rules import ir
from streamd.rules.node_events import TransitionEval
from streamd.rules.node_logic import AndEval, HeldEval, NotEval, OrEval, TimesEval, WithinEval
from streamd.rules.node_states import (
    ClockEval,
    CountEval,
    DarkEval,
    DaysEval,
    DwellEval,
    ExistsEval,
    MotionEval,
    SceneEval,
    UnattendedEval,
)
from streamd.rules.truth import SCENE, Context, Hit, Key, NodeEval, SceneScorer, Truth

__all__ = [
    "SCENE",
    "Context",
    "Hit",
    "Key",
    "NodeEval",
    "SceneScorer",
    "Truth",
    "build",
    "site_zone",
]


def build(node: ir.Node, ctx: Context) -> NodeEval:
    """A fresh, stateful evaluator for one rule on one camera."""
    match node:
        case ir.Exists():
            return ExistsEval(node)
        case ir.Count():
            return CountEval(node)
        case ir.Unattended():
            return UnattendedEval(node)
        case ir.Dwell():
            return DwellEval(node)
        case ir.Transition():
            return TransitionEval(node)
        case ir.Motion():
            return MotionEval(node)
        case ir.Dark():
            return DarkEval(node)
        case ir.ClockWindow():
            return ClockEval(node, ctx)
        case ir.Days():
            return DaysEval(node, ctx)
        case ir.Scene():
            return SceneEval(node, ctx)
        case ir.And():
            return AndEval([build(i, ctx) for i in node.items])
        case ir.Or():
            return OrEval([build(i, ctx) for i in node.items])
        case ir.Not():
            return NotEval(build(node.item, ctx))
        case ir.Held():
            return HeldEval(build(node.item, ctx), node.seconds, ctx)
        case ir.Within():
            return WithinEval(build(node.first, ctx), build(node.then, ctx), node.seconds)
        case ir.Times():
            return TimesEval(build(node.item, ctx), node.n, node.seconds)
    raise TypeError(f"not a rule node: {node!r}")  # pragma: no cover - the union is closed


def site_zone(name: str | None) -> dt.tzinfo | None:
    return None if name is None else zoneinfo.ZoneInfo(name)

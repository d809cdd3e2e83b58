"""Lark parse tree → IR nodes (the parser's second half).

Token values are not in the tree: each token's position indexes the lexeme list, which holds
the typed value (classes, seconds per unit, a Place…). Errors name the word they are about.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from lark import Token, Transformer

from streamd.errors import RuleCompileError
from streamd.rules.ir import (
    ANY_CLASS,
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
    Scene,
    Subject,
    Times,
    Transition,
    Unattended,
    Within,
)
from streamd.rules.lexer import Lexeme, Place

__all__ = ["TreeToIR"]


def _hour(n: float, meridiem: str, text: str) -> int:
    if n != int(n) or not 1 <= n <= 12:
        raise RuleCompileError(text, [], [f"{n:g} {meridiem}"], "with am / pm the hour is 1 to 12")
    return int(n) % 12 + (12 if meridiem == "pm" else 0)


class TreeToIR(Transformer[Token, Any]):
    """Parse tree → IR nodes. Token values are looked up in the lexeme list by position."""

    def __init__(
        self, text: str, words: list[Lexeme], zones: Sequence[str], lines: Sequence[str]
    ) -> None:
        super().__init__()
        self.text = text
        self.words = words
        self.zones = zones
        self.lines = lines
        self.notes: list[str] = []

    def _lx(self, tok: Token) -> Lexeme:
        return self.words[tok.start_pos or 0]

    def _fail(self, bad: str, hint: str) -> RuleCompileError:
        return RuleCompileError(self.text, [], [bad], hint)

    @staticmethod
    def _tokens(items: list[Any], *types: str) -> list[Token]:
        return [t for t in items if isinstance(t, Token) and t.type in types]

    @staticmethod
    def _nodes(items: list[Any]) -> list[Any]:
        return [i for i in items if not isinstance(i, Token)]

    # --- the tree ---------------------------------------------------------------------------
    def start(self, items: list[Any]) -> Node:
        node = items[0]
        if isinstance(node, _SubjectParts):  # pragma: no cover - the grammar wraps subjects
            raise self._fail(self.text, "a rule needs a verb or condition")
        return node  # type: ignore[no-any-return]

    def unless(self, items: list[Any]) -> Node:
        main, exception = self._nodes(items)
        return self.and_([main, Not(item=exception)])

    def or_(self, items: list[Any]) -> Node:
        flat: list[Node] = []
        for n in self._nodes(items):
            flat += list(n.items) if isinstance(n, Or) else [n]
        return Or(items=tuple(flat))

    def and_(self, items: list[Any]) -> Node:
        flat: list[Node] = []
        for n in self._nodes(items):
            flat += list(n.items) if isinstance(n, And) else [n]
        # "on mondays and fridays" lists days: one set, not two conditions that never meet
        days = [n for n in flat if isinstance(n, Days)]
        if len(days) > 1:
            union = Days(days=tuple(d for n in days for d in n.days))
            flat = [n for n in flat if not isinstance(n, Days)] + [union]
        return flat[0] if len(flat) == 1 else And(items=tuple(flat))

    def paren(self, items: list[Any]) -> Node:
        return self._nodes(items)[0]  # type: ignore[no-any-return]

    def not_(self, items: list[Any]) -> Node:
        return Not(item=self._nodes(items)[0])

    def held(self, items: list[Any]) -> Node:
        item, seconds = self._nodes(items)
        if isinstance(item, Transition) and item.event == "stops":
            # "a car stops in the driveway for 5 minutes" means it stays stopped that long
            self.notes.append("'stops … for N' read as: stationary for N")
            subject = item.subject.model_copy(update={"state": "stationary"})
            item = Exists(subject=Subject.model_validate(subject.model_dump()))
        if isinstance(item, Transition):
            raise self._fail(
                item.event.replace("_", " "),
                f"{item.event.replace('_', ' ')!r} happens at an instant, so 'for N' cannot "
                "apply; use a state (present, stationary, lying, stays in…) or 'N times in M'",
            )
        return Held(item=item, seconds=seconds)

    def within(self, items: list[Any]) -> Node:
        first, then, seconds = self._nodes(items)
        return Within(first=first, then=then, seconds=seconds)

    def times(self, items: list[Any]) -> Node:
        item, seconds = self._nodes(items)
        n = self._lx(self._tokens(items, "NUMBER")[0]).value
        if n != int(n):
            raise self._fail(f"{n:g}", "a count of times is a whole number")
        return Times(item=item, n=int(n), seconds=seconds)

    # --- clauses ----------------------------------------------------------------------------
    def present(self, items: list[Any]) -> tuple[str, Any]:
        return ("posts", self._nodes(items))

    def exists(self, items: list[Any]) -> Node:
        parts: _SubjectParts = items[0]
        for post in items[1:]:
            parts.apply(post)
        return Exists(subject=parts.build())

    def count(self, items: list[Any]) -> Node:
        parts: _SubjectParts = self._nodes(items)[0]
        for post in self._nodes(items)[1:]:
            parts.apply(post)
        op = ">="
        for tok in self._tokens(items, "CMP", "CMP_POST"):
            op = self._lx(tok).value
        n = self._lx(self._tokens(items, "NUMBER")[0]).value
        if n != int(n):
            raise self._fail(f"{n:g}", "a count is a whole number")
        return Count(subject=parts.build(), op=op, n=int(n))

    def absence(self, items: list[Any]) -> Node:
        nobody = self._tokens(items, "NOBODY")
        if nobody:
            parts = _SubjectParts(self, classes=self._lx(nobody[0]).value)
            for post in self._nodes(items):
                parts.apply(post)
        else:
            parts = self._nodes(items)[0]
            for post in self._nodes(items)[1:]:
                parts.apply(post)
        return Count(subject=parts.build(), op="==", n=0)

    def unattended(self, items: list[Any]) -> Node:
        parts: _SubjectParts = self._nodes(items)[0]
        widths = 2.0
        for extra in self._nodes(items)[1:]:
            if isinstance(extra, tuple):
                parts.apply(extra)
            else:
                widths = extra
        return Unattended(subject=parts.build(), widths=widths)

    def owner(self, items: list[Any]) -> float:
        inner = self._nodes(items)
        if inner:
            return float(inner[0])
        op = self._lx(self._tokens(items, "CMP")[0]).value
        if op not in (">", ">="):
            raise self._fail(op, "unattended means the owner is MORE than N widths away")
        return float(self._lx(self._tokens(items, "NUMBER")[0]).value)

    def dwell(self, items: list[Any]) -> Node:
        nodes = self._nodes(items)
        parts: _SubjectParts = nodes[0]
        for post in nodes[1:-1]:
            parts.apply(post if isinstance(post, tuple) else self.place_post([post]))
        return Dwell(subject=parts.build(), seconds=nodes[-1])

    def _transition(self, event: str, items: list[Any], **fields: Any) -> Node:
        nodes = self._nodes(items)
        parts: _SubjectParts = nodes[0]
        for post in nodes[1:]:
            if isinstance(post, tuple):
                parts.apply(post)
        return Transition(event=event, subject=parts.build(), **fields)

    def appears(self, items: list[Any]) -> Node:
        return self._transition("appears", items)

    def leaves(self, items: list[Any]) -> Node:
        return self._transition("leaves", items)

    def _zone_of(self, place: Place | None, verb: str) -> str:
        if place is None:
            raise self._fail(verb, f"'{verb}' needs a zone of this camera{self._zones_hint()}")
        return self._zone(place)

    def exits(self, items: list[Any]) -> Node:
        zone = self._zone_of(self._nodes(items)[1], "exits")
        return self._transition("exits", items[:1], zone=zone)

    def enters(self, items: list[Any]) -> Node:
        zone = self._zone_of(self._nodes(items)[1], "enters")
        return self._transition("enters", items[:1], zone=zone)

    def crosses(self, items: list[Any]) -> Node:
        place: Place = self._lx(self._tokens(items, "PLACE")[0]).value
        if not place.is_line:
            raise self._fail(place.name, f"{place.name!r} is a zone, not a line{self._lines()}")
        direction = [self._lx(t).value for t in self._tokens(items, "DIR")]
        return self._transition(
            "crosses", items[:1], line=place.name, direction=direction[0] if direction else None
        )

    def placed(self, items: list[Any]) -> Node:
        return self._transition("placed", items)

    def removed(self, items: list[Any]) -> Node:
        return self._transition("removed", items)

    def falls(self, items: list[Any]) -> Node:
        return self._transition("falls", items)

    def gets_up(self, items: list[Any]) -> Node:
        return self._transition("gets_up", items)

    def stops(self, items: list[Any]) -> Node:
        return self._transition("stops", items)

    def starts_moving(self, items: list[Any]) -> Node:
        return self._transition("starts_moving", items)

    def runs(self, items: list[Any]) -> Node:
        return self._transition("runs", items)

    def motion(self, items: list[Any]) -> Node:
        nums = self._tokens(items, "NUMBER")
        if not nums:
            return Motion()
        op = self._lx(self._tokens(items, "CMP")[0]).value
        if op not in (">", ">="):
            raise self._fail(op, "motion is at least a share of the frame: '(≥ 1%)'")
        return Motion(min_fraction=self._lx(nums[0]).value / 100)

    def scene(self, items: list[Any]) -> Node:
        text = self._lx(self._tokens(items, "TEXT")[0]).value
        subj = self._nodes(items)
        return Scene(text=text, subject=subj[0].build() if subj else None)

    # --- subjects ---------------------------------------------------------------------------
    def subject(self, items: list[Any]) -> _SubjectParts:
        parts = _SubjectParts(self, classes=())
        for it in items:
            if isinstance(it, Token):
                parts.adjective(self._lx(it))
            elif isinstance(it, _Nouns):
                parts.classes, parts.verify = it.classes, it.verify
            else:
                parts.apply(it)
        return parts

    def nouns(self, items: list[Any]) -> _Nouns:
        classes: set[str] = set()
        verify = None
        for tok in self._tokens(items, "NOUN"):
            lx = self._lx(tok)
            classes |= set(lx.value)
            if lx.entry is not None and lx.entry.verify:
                verify = lx.entry.verify
        if ANY_CLASS in classes:
            classes = {ANY_CLASS}
        return _Nouns(tuple(sorted(classes)), verify)

    def post(self, items: list[Any]) -> tuple[str, Any]:
        it = items[0]
        if isinstance(it, tuple):
            return it
        lx = self._lx(it)
        if lx.terminal == "FLOOR":
            return ("state", "lying")
        return ("state", lx.value)

    def on_object(self, items: list[Any]) -> tuple[str, Any]:
        return ("relation", ("on", items[1].classes))

    def near_object(self, items: list[Any]) -> tuple[str, Any]:
        return ("relation", ("near", items[1].classes))

    def verified(self, items: list[Any]) -> tuple[str, Any]:
        return ("verify", self._lx(items[1]).value)

    def place_post(self, items: list[Any]) -> tuple[str, Any]:
        place = self._nodes(items)[0]
        return ("zone", None if place is None else self._zone(place))

    def place(self, items: list[Any]) -> Place | None:
        lx = self._lx(items[0])
        return lx.value if lx.terminal == "PLACE" else None

    def _zone(self, place: Place) -> str:
        if not place.is_zone:
            raise self._fail(
                place.name, f"{place.name!r} is a line, not a zone{self._zones_hint()}"
            )
        return place.name

    def _zones_hint(self) -> str:
        return f" (zones here: {', '.join(self.zones)})" if self.zones else " (no zones configured)"

    def _lines(self) -> str:
        return f" (lines here: {', '.join(self.lines)})" if self.lines else " (no lines configured)"

    # --- qualifiers -------------------------------------------------------------------------
    def dark(self, items: list[Any]) -> Node:
        nums = self._tokens(items, "NUMBER")
        if not nums:
            return Dark()
        op = self._lx(self._tokens(items, "CMP")[0]).value
        if op not in ("<", "<="):
            raise self._fail(op, "dark means brightness BELOW a level: '(brightness < 60)'")
        return Dark(max_brightness=self._lx(nums[0]).value)

    def clock(self, items: list[Any]) -> Node:
        start, end = self._nodes(items)
        return ClockWindow(start=start, end=end)

    def after(self, items: list[Any]) -> Node:
        start = self._nodes(items)[0]
        self.notes.append(f"'after {start:%H:%M}' read as: from {start:%H:%M} until midnight")
        return ClockWindow(start=start, end=dt.time(0, 0))

    def before(self, items: list[Any]) -> Node:
        end = self._nodes(items)[0]
        self.notes.append(f"'before {end:%H:%M}' read as: from midnight until {end:%H:%M}")
        return ClockWindow(start=dt.time(0, 0), end=end)

    def time(self, items: list[Any]) -> dt.time:
        first = self._lx(items[0])
        meridiem = self._lx(items[1]).value if len(items) > 1 else None
        if first.terminal == "CLOCK":
            t: dt.time = first.value
            if meridiem is None:
                return t
            return dt.time(_hour(t.hour or 12, meridiem, self.text), t.minute)
        return dt.time(_hour(first.value, meridiem or "am", self.text), 0)

    def days(self, items: list[Any]) -> Node:
        days: list[str] = []
        for tok in self._tokens(items, "DAYS"):
            days += self._lx(tok).value
        return Days(days=tuple(days))

    def duration(self, items: list[Any]) -> float:
        for tok in self._tokens(items, "CMP"):
            if self._lx(tok).value not in (">", ">="):
                raise self._fail(
                    tok.value, "a duration is a minimum: 'for 10 seconds' / 'for more than 1 min'"
                )
        return float(self._nodes(items)[0])

    def amount(self, items: list[Any]) -> float:
        nums = self._tokens(items, "NUMBER")
        n = self._lx(nums[0]).value if nums else 1.0
        unit = self._lx(self._tokens(items, "UNIT")[0]).value
        seconds = float(n * unit)
        if seconds <= 0:
            raise self._fail(f"{n:g}", "a duration must be longer than zero")
        return seconds


class _Nouns:
    def __init__(self, classes: tuple[str, ...], verify: str | None) -> None:
        self.classes = classes
        self.verify = verify


class _SubjectParts:
    """A subject being assembled from adjectives, nouns and trailing phrases."""

    def __init__(self, build: TreeToIR, classes: tuple[str, ...]) -> None:
        self._b = build
        self.classes = classes
        self.verify: str | None = None
        self.fields: dict[str, Any] = {}

    def _set(self, key: str, value: Any, word: str) -> None:
        old = self.fields.get(key)
        if old is not None and old != value:
            raise self._b._fail(word, f"the subject has two {key}s: {old!r} and {value!r}")
        self.fields[key] = value

    def adjective(self, lx: Lexeme) -> None:
        key = "colour" if lx.terminal == "COLOUR" else "state"
        self._set(key, lx.value, lx.text)

    def apply(self, post: tuple[str, Any]) -> None:
        key, value = post
        if key == "posts":
            for inner in value:
                self.apply(inner)
            return
        if key == "zone" and value is None:
            return  # "in the room", "in view": the whole camera view
        if key == "relation":
            self._set("relation", {"kind": value[0], "classes": value[1]}, value[0])
        elif key == "verify":
            self.verify = value
        else:
            self._set(key, value, str(value))

    def build(self) -> Subject:
        return Subject.model_validate(
            {"classes": self.classes, "verify": self.verify, **self.fields}
        )

"""Rule compiler (text → plan) and the temporal engine (observations → event changes)."""

from __future__ import annotations

import numpy as np
import pytest

from streamd.config import RuleConfig
from streamd.errors import RuleCompileError
from streamd.ingest.frame import Frame
from streamd.rules.compiler import compile_rule
from streamd.rules.engine import RuleRunner, RulesEngine
from streamd.window.analysis import Observation
from streamd.window.detection import Box, Detection
from streamd.window.scene import SceneState, StaticObject

LEFT_BAG = "object(backpack|handbag|suitcase) ∧ stationary ∧ ¬near(person, 2 widths)"


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("alert when a bag is left unattended for 30 seconds",
         f"{LEFT_BAG} held for ≥ 30 s"),
        ("abandoned luggage for 1 minute",
         f"{LEFT_BAG} held for ≥ 60 s"),
        ("an object is left behind", "object(any object) ∧ stationary ∧ ¬near(person, 2 widths) "
         "held for ≥ 30 s"),
        ("more than 3 people", "count(person) > 3"),
        ("alert when more than 3 people are present for 10 s", "count(person) > 3 held for ≥ 10 s"),
        ("notify me if at least 2 people are visible for 5 seconds",
         "count(person) >= 2 held for ≥ 5 s"),
        ("2 or more cars", "count(car) >= 2"),
        ("fewer than 2 cars for 1 min", "count(car) < 2 held for ≥ 60 s"),
        ("a person is present", "object(person)"),
        ("a car appears", "object(car)"),
        ("no one is here", "¬object(person)"),
        ("the bicycle is missing", "¬object(bicycle)"),
        ("someone is in the lobby after dark", "object(person) ∧ dark(brightness < 60)"),
        ("there is motion", "motion ≥ 0.5% of frame"),
        ("a traffic light is visible", "object(traffic light)"),
    ],
)  # fmt: skip
def test_compiles_to_explainable_plan(text: str, plan: str) -> None:
    assert compile_rule(text).describe() == plan


@pytest.mark.parametrize(
    ("text", "not_understood"),
    [
        ("alert when a person is dancing", ["dancing"]),
        ("a unicorn appears", ["unicorn"]),
        ("a red car is present", ["red"]),
        ("a person is lying on the floor for 10 s", ["lying", "floor"]),
        ("", []),
    ],
)
def test_uncompilable_text_says_what_it_did_not_understand(
    text: str, not_understood: list[str]
) -> None:
    with pytest.raises(RuleCompileError) as info:
        compile_rule(text)
    for word in not_understood:
        assert word in info.value.not_understood
    assert "cannot compile rule" in str(info.value)


def _obs(t: float, people: int = 0, static: tuple[StaticObject, ...] = ()) -> Observation:
    dets = tuple(
        Detection("person", 0, 0.8, Box(10 + 60 * i, 10, 50 + 60 * i, 100)) for i in range(people)
    )
    frame = Frame("cam", np.zeros((120, 400, 3), np.uint8), t, t, int(t))
    return Observation(frame, dets, SceneState(0.0, 0.0, (), static, 100.0), analysed=True)


def _runner(text: str, **kw: float) -> RuleRunner:
    rule = RuleConfig(name="r", text=text, **kw)  # type: ignore[arg-type]
    return RuleRunner("cam", rule, compile_rule(text))


def test_duration_hysteresis_and_cooldown() -> None:
    r = _runner("more than 1 person for 3 seconds", clear_s=2, cooldown_s=10)
    kinds: list[tuple[float, str]] = []
    counts = {**dict.fromkeys(range(0, 2), 0), **dict.fromkeys(range(2, 9), 2)}
    counts[5] = 1  # one missed detection inside the event does not split it
    counts |= dict.fromkeys(range(9, 14), 0) | dict.fromkeys(range(14, 30), 2)
    for t in range(30):
        for ch in r.step(_obs(1000.0 + t, counts[t])):
            kinds.append((t, ch.kind))
            if ch.kind == "new":
                assert ch.snapshot is not None
                assert len(ch.snapshot.boxes) == 2
    # held from t=2; the miss at t=5 (shorter than clear_s) does not restart the clock
    assert kinds[0] == (6, "new")
    ends = [t for t, k in kinds if k == "end"]
    assert ends == [10]  # last true at t=8, ended clear_s=2 later
    news = [t for t, k in kinds if k == "new"]
    # the second episode holds 3 s at t=17, but the cooldown after t=10 runs until t=20
    assert news == [6, 20]


def test_left_object_starts_when_object_was_left() -> None:
    r = _runner("a bag is left unattended for 5 seconds")
    bag = StaticObject(1, Box(100, 80, 130, 100), since=1003.0, last_attended=1004.0)
    fired = []
    for t in range(0, 15):
        static = (bag,) if t >= 5 else ()
        fired += [(t, ch) for ch in r.step(_obs(1000.0 + t, 0, static))]
    assert fired[0][0] == 9  # unattended since 1004 → 5 s at 1009
    ch = fired[0][1]
    assert ch.kind == "new"
    assert ch.start_time == 1003.0  # the event starts when the bag was left
    assert ch.details["unattended_since"] == 1004.0


def test_labelled_other_object_does_not_count_for_bag_rule() -> None:
    r = _runner("a bag is left unattended for 2 seconds")
    car = StaticObject(1, Box(100, 80, 130, 100), 1000.0, 1000.0, label="car", score=0.9)
    assert all(not r.step(_obs(1000.0 + t, 0, (car,))) for t in range(10))


def test_engine_evaluates_per_segment_and_closes_open_events() -> None:
    eng = RulesEngine("cam", [_runner("a person is present")], segment_s=2.0)
    assert eng.feed(_obs(100.0, 1)) == []
    assert eng.feed(_obs(101.0, 1)) == []
    changes = eng.feed(_obs(102.0, 1))  # completes the segment [100, 102]
    assert [c.kind for c in changes] == ["new"]
    assert changes[0].start_time == 100.0
    closing = eng.close(105.0)
    assert [c.kind for c in closing] == ["end"]
    assert closing[0].end_time == 105.0

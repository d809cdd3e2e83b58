"""Rule compiler (text → plan) and the temporal engine (observations → event changes)."""

from __future__ import annotations

import pytest
from support.world import people, track, world

from streamd.config import RuleConfig
from streamd.errors import RuleCompileError
from streamd.perception.geometry import Box
from streamd.perception.world import Posture, TrackKind, TrackState, WorldState
from streamd.rules.compiler import compile_rule
from streamd.rules.engine import RuleRunner, RulesEngine

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
        ("someone falls down", "fell(person) ∧ ¬got_up"),
        ("alert when a person has fallen", "fell(person) ∧ ¬got_up"),
        ("a person is lying on the floor for 10 seconds",
         "posture(person) = lying held for ≥ 10 s"),
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
        ("a person is juggling on the floor for 10 s", ["juggling", "floor"]),
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


def _obs(t: float, n_people: int = 0, static: tuple[TrackState, ...] = ()) -> WorldState:
    return world(t, [*people(t, n_people), *static])


def _bag(placed: float, unattended: float | None, label: str | None = None) -> TrackState:
    box = Box(100, 80, 130, 100)
    return track(
        9,
        box,
        placed,
        label=label,
        kind=TrackKind.OBJECT,
        placed_at=placed,
        last_attended=unattended,
        unattended_since=unattended,
    )


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


def test_left_object_starts_when_object_became_unattended() -> None:
    r = _runner("a bag is left unattended for 5 seconds")
    fired = []
    for t in range(0, 15):
        static = (_bag(1003.0, 1004.0 if t >= 4 else None),) if t >= 5 else ()
        fired += [(t, ch) for ch in r.step(_obs(1000.0 + t, 0, static))]
    assert fired[0][0] == 9  # unattended since 1004 → 5 s at 1009
    ch = fired[0][1]
    assert ch.kind == "new"
    assert ch.start_time == 1004.0  # the event starts when the bag became unattended
    assert ch.details["placed_at"] == 1003.0
    assert ch.details["unattended_since"] == 1004.0


def test_attended_object_never_fires() -> None:
    r = _runner("a bag is left unattended for 2 seconds")
    assert all(not r.step(_obs(1000.0 + t, 1, (_bag(1000.0, None),))) for t in range(20))


def test_labelled_other_object_does_not_count_for_bag_rule() -> None:
    r = _runner("a bag is left unattended for 2 seconds")
    car = _bag(1000.0, 1000.0, label="car")
    assert all(not r.step(_obs(1000.0 + t, 0, (car,))) for t in range(10))


def test_fall_event_lasts_until_the_person_gets_up() -> None:
    r = _runner("someone falls down", clear_s=2)
    box = Box(10, 60, 100, 100)
    kinds = []
    for t in range(20):
        fallen = 1004.0 if 5 <= t < 12 else None
        posture = Posture.LYING if fallen else Posture.UPRIGHT
        p = track(1, box, 1000.0 + t, fallen_at=fallen, posture=posture)
        kinds += [(t, ch.kind, ch.start_time) for ch in r.step(_obs(1000.0 + t, 0, (p,)))]
    assert kinds == [(5, "new", 1004.0), (13, "end", 1004.0)]


def test_lying_counts_from_when_the_person_lay_down() -> None:
    r = _runner("a person is lying on the floor for 5 seconds")
    box = Box(10, 60, 100, 100)
    fired = []
    for t in range(15):
        lying = t >= 3
        p = track(
            1,
            box,
            1000.0 + t,
            posture=Posture.LYING if lying else Posture.UPRIGHT,
            lying_since=1003.0 if lying else None,
        )
        fired += [(t, ch.kind) for ch in r.step(_obs(1000.0 + t, 0, (p,)))]
    assert fired == [(8, "new")]


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

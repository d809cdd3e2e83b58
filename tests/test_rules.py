"""Rules over the world model: compile (text → plan), evaluate per subject, and the event
engine (durations, hysteresis, cooldown per subject, one event per subject), on WorldStates
built by hand (what the world model would report). Parsing itself is tested in
test_rule_parser.py."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from support.world import people, track, world

from streamd.config import RuleConfig
from streamd.errors import RuleCompileError
from streamd.perception.geometry import Box
from streamd.perception.world import (
    EventKind,
    Posture,
    SceneEvent,
    TrackKind,
    TrackState,
    WorldState,
)
from streamd.rules.compiler import compile_rule
from streamd.rules.engine import RuleRunner, RulesEngine

LEFT_BAG = "backpack|handbag|suitcase left unattended (owner > 2 widths away)"


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("alert when a bag is left unattended for 30 seconds", f"{LEFT_BAG} held for ≥ 30 s"),
        ("abandoned luggage for 1 minute", f"{LEFT_BAG} held for ≥ 1 min"),
        ("more than 3 people for 10 seconds", "count(person) > 3 held for ≥ 10 s"),
        ("no one is here", "count(person) = 0"),
        ("someone falls down", "person falls"),
        ("a person is lying on the floor for 10 seconds", "lying person present held for ≥ 10 s"),
        ("a person enters the garden", "person enters zone garden"),
        ("a car crosses the gate line inwards", "car crosses line gate inwards"),
    ],
)
def test_compiles_to_explainable_plan(text: str, plan: str) -> None:
    assert compile_rule(text, zones=["garden"], lines=["gate"]).describe() == plan


def test_a_zone_the_cameras_do_not_have_is_an_error_naming_it() -> None:
    with pytest.raises(RuleCompileError) as info:
        compile_rule("a person enters the garden")
    assert "garden" in info.value.not_understood


def test_structured_rule_compiles_like_its_words() -> None:
    structured = {
        "root": {
            "kind": "held",
            "seconds": 5,
            "item": {"kind": "unattended", "subject": {"classes": ["backpack"]}},
        }
    }
    plan = compile_rule("", structured=structured)
    assert plan.describe() == "backpack left unattended (owner > 2 widths away) held for ≥ 5 s"


def _obs(t: float, n_people: int = 0, extra: tuple[TrackState, ...] = ()) -> WorldState:
    return world(t, [*people(t, n_people), *extra])


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


def _runner(text: str, tz: dt.tzinfo | None = None, **kw: float) -> RuleRunner:
    rule = RuleConfig(name="r", text=text, **kw)  # type: ignore[arg-type]
    return RuleRunner("cam", rule, compile_rule(text, zones=["garden"], lines=["gate"]), tz)


def test_duration_hysteresis_and_cooldown() -> None:
    r = _runner("more than 1 person for 3 seconds", clear_s=2, cooldown_s=10)
    kinds: list[tuple[int, str]] = []
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


def test_two_people_arriving_apart_are_two_events() -> None:
    r = _runner("a person is present", cooldown_s=30)
    events: list[tuple[int, str, object]] = []
    for t in range(40):
        tracks = []
        if 0 <= t < 25:
            tracks.append(track(1, Box(10, 10, 50, 100), 1000.0 + t))
        if 10 <= t < 30:
            tracks.append(track(2, Box(200, 10, 240, 100), 1000.0 + t))
        for ch in r.step(world(1000.0 + t, tracks)):
            events.append((t, ch.kind, ch.details["subject"]))
    assert [(t, k, s) for t, k, s in events if k == "new"] == [(0, "new", 1), (10, "new", 2)]
    news = {ch for _, k, ch in events if k == "new"}
    ends = {ch for _, k, ch in events if k == "end"}
    assert news == ends == {1, 2}


def test_cooldown_keeps_the_same_subject_quiet_but_not_another() -> None:
    r = _runner("a person enters the garden", cooldown_s=60, clear_s=2)
    fired = []
    for t in range(30):
        events: tuple[SceneEvent, ...] = ()
        if t in (2, 12):  # the same person enters twice
            events = (SceneEvent(EventKind.ZONE_ENTERED, 1000.0 + t, 1, "person", zone="garden"),)
        if t == 20:  # someone else
            events = (SceneEvent(EventKind.ZONE_ENTERED, 1000.0 + t, 2, "person", zone="garden"),)
        tracks = [track(1, Box(10, 10, 50, 100), 1000.0 + t, zones=frozenset({"garden"}))]
        tracks.append(track(2, Box(200, 10, 240, 100), 1000.0 + t, zones=frozenset({"garden"})))
        fired += [(t, ch.details["subject"]) for ch in r.step(world(1000.0 + t, tracks, events))
                  if ch.kind == "new"]  # fmt: skip
    assert fired == [(2, 1), (20, 2)]


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
        fired += [(t, ch.kind, ch.start_time) for ch in r.step(_obs(1000.0 + t, 0, (p,)))]
    assert fired == [(8, "new", 1003.0)]


def test_line_crossing_direction_is_honoured() -> None:
    r = _runner("a car crosses the gate line inwards", clear_s=1)
    fired = []
    for t, direction in enumerate(["out", None, "in", None, "out", "in"]):
        ts = 1000.0 + 2 * t
        car = track(t + 1, Box(10, 10, 60, 40), ts, label="car")
        events = (
            (
                SceneEvent(
                    EventKind.LINE_CROSSED, ts, t + 1, "car", line="gate", direction=direction
                ),
            )
            if direction
            else ()
        )
        fired += [t for ch in r.step(world(ts, [car], events)) if ch.kind == "new"]
    assert fired == [2, 5]


def test_clock_window_is_in_the_site_time_zone() -> None:
    tz = zoneinfo.ZoneInfo("Asia/Tokyo")  # UTC+9, no DST
    r = _runner("a person is present between 23:00 and 06:00", tz=tz, clear_s=1)
    day = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    fired = []
    for hour in range(24):  # UTC hours: 23:00-06:00 Tokyo is 14:00-21:00 UTC
        ts = (day + dt.timedelta(hours=hour)).timestamp()
        fired += [hour for ch in r.step(_obs(ts, 1)) if ch.kind == "new"]
    assert fired == [14]
    # the same rule in UTC fires at 23:00 UTC instead
    r_utc = _runner("a person is present between 23:00 and 06:00", tz=dt.UTC, clear_s=1)
    fired_utc = []
    for hour in range(24):
        ts = (day + dt.timedelta(hours=hour)).timestamp()
        fired_utc += [hour for ch in r_utc.step(_obs(ts, 1)) if ch.kind == "new"]
    assert fired_utc == [0, 23]


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


def _scripted(
    frames: list[tuple[list[TrackState], tuple[SceneEvent, ...]]], text: str
) -> list[int]:
    r = _runner(text, clear_s=1, cooldown_s=0)
    fired: list[int] = []
    for i, (tracks, events) in enumerate(frames):
        fired += [i for ch in r.step(world(1000.0 + i, tracks, events)) if ch.kind == "new"]
    return fired


def _at(i: int, tid: int = 1, label: str = "person", **kw: object) -> TrackState:
    return track(tid, Box(10 + 5 * i, 10, 50 + 5 * i, 100), 1000.0 + i, label=label, **kw)


def _ev(
    kind: EventKind, i: int, tid: int | None = 1, label: str = "person", **kw: object
) -> SceneEvent:
    return SceneEvent(kind, 1000.0 + i, tid, label, Box(10, 10, 50, 100), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "event", "at"),
    [
        ("a person appears", EventKind.APPEARED, {}),
        ("a person leaves", EventKind.LEFT, {}),
        ("a person enters the garden", EventKind.ZONE_ENTERED, {"zone": "garden"}),
        ("a person leaves the garden", EventKind.ZONE_LEFT, {"zone": "garden"}),
        ("a person crosses the gate line", EventKind.LINE_CROSSED,
         {"line": "gate", "direction": "out"}),
        ("a person gets up", EventKind.GOT_UP, {}),
    ],
)  # fmt: skip
def test_every_scene_event_transition_fires_once(
    text: str, event: EventKind, at: dict[str, object]
) -> None:
    frames = []
    for i in range(8):
        zones = frozenset({"garden"}) if event is EventKind.ZONE_ENTERED and i >= 3 else frozenset()
        events = (_ev(event, i, **at),) if i == 3 else ()
        tracks = [] if event is EventKind.LEFT and i >= 3 else [_at(i, zones=zones)]
        frames.append((tracks, events))
    assert _scripted(frames, text) == [3]
    # the same event about something else (a car) does not fire a person rule
    other = [
        ([_at(i, 2, "car")], (_ev(event, i, 2, "car", **at),) if i == 3 else ()) for i in range(8)
    ]
    assert _scripted(other, text) == []


def test_placed_and_removed_fire_for_unnamed_things() -> None:
    bag = track(5, Box(100, 80, 130, 100), 1003.0, label=None, kind=TrackKind.OBJECT)
    placed = [([bag] if i >= 3 else [], (_ev(EventKind.PLACED, 3, 5, None),) if i == 3 else ())  # type: ignore[arg-type]
              for i in range(6)]  # fmt: skip
    assert _scripted(placed, "a package is delivered") == [3]
    removed = [([], (_ev(EventKind.REMOVED, 2, None, None),) if i == 2 else ()) for i in range(6)]  # type: ignore[arg-type]
    assert _scripted(removed, "a package is taken") == [2]


def test_stops_starts_moving_and_runs_come_from_track_motion() -> None:
    moving = [True, True, False, False, True, True]
    frames = [([_at(i, label="car", moving=m)], ()) for i, m in enumerate(moving)]
    assert _scripted(frames, "a car stops") == [2]
    assert _scripted(frames, "a car starts moving") == [4]
    # 90 px tall, feet moving 200 px/s: over two body heights a second
    fast = [([_at(i, velocity=(200.0 if i >= 2 else 20.0, 0.0))], ()) for i in range(5)]
    assert _scripted(fast, "someone is running") == [2]


def test_falls_fire_from_the_world_models_fall_state() -> None:
    frames = [([_at(i, fallen_at=1002.0 if i >= 3 else None)], ()) for i in range(6)]
    assert _scripted(frames, "someone falls down") == [3]


def test_events_carry_the_subjects_current_and_entered_zones() -> None:
    r = _runner("a person is present", clear_s=2)
    changes = []
    for i, zones in enumerate([{"porch"}, {"porch"}, {"porch", "garden"}, {"garden"}]):
        p = track(1, Box(10, 10, 50, 100), 1000.0 + i, zones=frozenset(zones))
        changes += r.step(world(1000.0 + i, [p]))
    assert [c.kind for c in changes] == ["new", "update"]
    assert changes[0].details["zones"] == ["porch"]
    assert changes[0].details["entered_zones"] == ["porch"]
    assert changes[1].details["zones"] == ["garden", "porch"]
    assert changes[1].details["entered_zones"] == ["garden", "porch"]

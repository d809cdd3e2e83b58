"""The world model on real footage from ../shared/media (hand labels in bench/labels/).

Each test runs the real Perception + rules over a clip at the camera default of 1 fps, as fast
as it decodes, with the pose estimator the daemon loads by default (MediaPipe where installed),
and checks what a person watching the clip sees: when the bag was left, that a
fall is a fall and bending down is not, that a bottle taken off a table is "removed", that cars
enter a zone and cross a line in the direction they drive. Tolerances are those of the issue
(left objects ±3 s of the unattended onset, falls ±2 s of the labelled onset).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.footage import run_clip

from streamd.perception.zones import Line, Zone, ZoneSet

pytestmark = pytest.mark.media

BAG = "alert when a bag is left unattended for 5 seconds"
FALL = "someone falls down"
LYING = "a person is lying on the floor for 5 seconds"


def _clip(shared_dir: Path, name: str) -> Path:
    path = shared_dir / "media" / name
    if not path.is_file():
        pytest.skip(f"footage missing: {path}")
    return path


@pytest.mark.parametrize(
    ("clip", "unattended_at", "placed_at"),
    [
        # owner > 2 bag widths away at 15.0 s; bag set down 10.5-11.5 s (labels)
        ("abandoned/aboda_video1_corridor_backpack.mp4", 15.0, 11.0),
        # owner walks off at 34.4 s; bag put down ≈ 31 s
        ("abandoned/pets2006_concourse_backpack.mp4", 34.4, 31.0),
    ],
)
def test_left_bag_alerts_once_when_the_owner_walks_away(
    shared_dir: Path, model_path: Path, clip: str, unattended_at: float, placed_at: float
) -> None:
    run = run_clip(_clip(shared_dir, clip), model_path, {"bag": BAG})
    fired = run.fired("bag")
    assert len(fired) == 1, fired
    assert abs(fired[0] - unattended_at) <= 3.0, fired
    new = next(c for c in run.changes if c.kind == "new")
    # the owner is known and the bag was placed before it was left
    assert new.details["owner_id"] is not None
    assert new.details["placed_at"] - 1_700_000_000.0 <= unattended_at
    assert abs(new.details["placed_at"] - 1_700_000_000.0 - placed_at) <= 4.0


def test_fall_is_detected_at_its_onset(shared_dir: Path, model_path: Path) -> None:
    run = run_clip(
        _clip(shared_dir, "upfall/a01_trial2_cam1.mp4"), model_path, {"fall": FALL, "lying": LYING}
    )
    fired = run.fired("fall")
    assert len(fired) == 1
    assert abs(fired[0] - 0.72) <= 2.0  # labelled onset
    new = next(c for c in run.changes if c.kind == "new" and c.rule_name == "fall")
    falls = [e for e in run.scene("fell") if e.track_id == new.details["track_id"]]
    assert len(falls) == 1  # the scene event is emitted once for the person who fell
    assert run.fired("lying"), "the fallen person lies on the mattress to the end"


def test_picking_something_up_is_not_a_fall(shared_dir: Path, model_path: Path) -> None:
    for trial in ("a09_trial2_cam1", "a09_trial3_cam1"):
        run = run_clip(_clip(shared_dir, f"upfall/{trial}.mp4"), model_path, {"fall": FALL})
        assert run.fired("fall") == [], trial
        assert run.scene("fell") == [], trial


def test_lying_down_on_purpose_is_lying_not_a_fall(shared_dir: Path, model_path: Path) -> None:
    run = run_clip(
        _clip(shared_dir, "upfall/a11_trial2_cam1.mp4"), model_path, {"fall": FALL, "lying": LYING}
    )
    assert run.fired("lying"), "a person lies on the mattress for the whole clip"
    assert run.fired("fall") == []


def test_lying_with_the_head_towards_the_camera(shared_dir: Path, model_path: Path) -> None:
    """The side camera of the same trial: he lies with his head towards it for the whole clip,
    boxed (weakly) about as wide as tall, like someone seated; his skeleton says lying."""
    pytest.importorskip("mediapipe", reason="mediapipe not installed: scripts/install-pose")
    run = run_clip(
        _clip(shared_dir, "upfall/a11_trial2_cam2.mp4"),
        model_path,
        {"fall": FALL, "lying": LYING},
        pose="mediapipe",
    )
    assert len(run.fired("lying")) == 1, run.fired("lying")
    assert run.fired("fall") == []


_LOST_BEFORE_THE_EDGE = pytest.mark.xfail(
    strict=True,
    reason="known defect (issue 8): at this phase the detector loses a woman walking out one "
    "step (≈130 px) before the right edge, with not even a weak box of her; the foreground of "
    "her legs and the ghost of where she stood is followed as a wide, low body. Predicting one "
    "more step at her pace would call her out, but cost 5 of 80 UP-Fall falls (people falling "
    "sideways move as fast) in bench/accuracy.py",
)


@pytest.mark.parametrize(
    "phase_s",
    [
        pytest.param(0.0, marks=_LOST_BEFORE_THE_EDGE),
        0.25,
        0.5,
        pytest.param(0.75, marks=_LOST_BEFORE_THE_EDGE),
    ],
)
def test_walking_out_of_the_frame_is_not_a_fall(
    shared_dir: Path, model_path: Path, phase_s: float
) -> None:
    """People walk in, stand at the table and walk out at the right edge. At phase 0.5 the
    detector loses the first one at the edge (only a weak box of her, cut by it): the
    foreground of her legs and the ghost of where she stood is no body on the floor."""
    run = run_clip(
        _clip(shared_dir, "intel_one-by-one-person-detection.mp4"),
        model_path,
        {"fall": FALL},
        phase_s=phase_s,
    )
    assert run.fired("fall") == []


def test_bottle_taken_off_the_table_is_removed(shared_dir: Path, model_path: Path) -> None:
    run = run_clip(_clip(shared_dir, "intel_bottle-detection.mp4"), model_path, {})
    removed = [e.ts - 1_700_000_000.0 for e in run.scene("removed")]
    # labelled removals at 6.85, 17.6 (two bottles) and 31.85 s
    for at in (6.85, 17.6, 31.85):
        assert any(0 <= t - at <= 3.0 or abs(t - at) <= 1.0 for t in removed), (at, removed)


def _car_zones() -> ZoneSet:
    # Top-down car park: the left lane drives down the frame, the right lane up.
    return ZoneSet(
        (Zone("lower", ((0.0, 0.55), (1.0, 0.55), (1.0, 1.0), (0.0, 1.0))),),
        (Line("left_lane", (0.0, 0.5), (0.4, 0.5)),),
    )


def test_cars_enter_a_zone_and_cross_a_line_one_way(shared_dir: Path, model_path: Path) -> None:
    run = run_clip(_clip(shared_dir, "intel_car-detection.mp4"), model_path, {}, zones=_car_zones())
    entered = [e.ts - 1_700_000_000.0 for e in run.scene("zone_entered") if e.zone == "lower"]
    # cars pass at ≈4.5-7.5, 13.5-18 and 25-27.5 s
    assert any(13.0 <= t <= 19.0 for t in entered), entered
    crossed = [e for e in run.scene("line_crossed") if e.line == "left_lane"]
    assert len(crossed) >= 2, crossed
    # from the left of from→to (above the line, on screen) to its right: "in"
    assert {e.direction for e in crossed} == {"in"}

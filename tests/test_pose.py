"""The skeleton (perception/pose.py) for postures a person's box leaves open.

Geometry on landmark sets drawn by hand; how its answer changes a posture and a lying spot;
when the world model asks it (counted on the real MediaPipe); MediaPipe's answers on real
frames of ../shared/media, with the person boxes found by the real detector; the `model.pose`
setting through the config loader.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from support.footage import frame_at

from streamd.config import parse_config
from streamd.errors import ConfigError
from streamd.ingest.frame import Frame, Image
from streamd.perception.background import BackgroundModel, Foreground
from streamd.perception.detector import YoloxDetector
from streamd.perception.geometry import Box, Detection
from streamd.perception.lying_spots import LyingSpots
from streamd.perception.model import Perception
from streamd.perception.pose import (
    Landmark,
    MediapipePose,
    PoseParams,
    ask_pose,
    load_pose,
    lying_from_landmarks,
)
from streamd.perception.posture import PostureParams, classify, update_posture
from streamd.perception.tracker import Track
from streamd.perception.world import Posture

Point = tuple[float, float]

# BlazePose landmark indices
NOSE, SHOULDERS, HIPS, KNEES = 0, (11, 12), (23, 24), (25, 26)

HIP: Point = (200.0, 200.0)
TORSO, THIGH = 60.0, 50.0


def _at(origin: Point, deg_from_up: float, length: float) -> Point:
    """`length` px from `origin` in the image direction `deg_from_up` (0 up, 90 right, 180
    down)."""
    a = math.radians(deg_from_up)
    return (origin[0] + length * math.sin(a), origin[1] - length * math.cos(a))


def _body(
    torso: float,
    thighs: float,
    nose: Point | None = None,
    trunk_seen: float = 0.95,
    knees_seen: float = 0.9,
) -> list[Landmark]:
    """33 landmarks of a body whose torso (hips → shoulders) and thighs (hips → knees) point
    `torso` and `thighs` degrees from up, head beyond the shoulders unless `nose` says where;
    each left/right pair 10 px apart about its point, every landmark not named unseen."""
    shoulders, knees = _at(HIP, torso, TORSO), _at(HIP, thighs, THIGH)
    head = nose or _at(HIP, torso, TORSO + 20)
    pts = [Landmark(HIP[0], HIP[1], 0.0)] * 33
    pts[NOSE] = Landmark(head[0], head[1], 0.9)
    for (left, right), (x, y), seen in (
        (SHOULDERS, shoulders, trunk_seen),
        (HIPS, HIP, trunk_seen),
        (KNEES, knees, knees_seen),
    ):
        pts[left], pts[right] = Landmark(x - 5, y, seen), Landmark(x + 5, y, seen)
    return pts


# A body straight at the hips has its thighs 180° from its torso.
GEOMETRY = [
    pytest.param(_body(0, 180), False, id="standing"),
    pytest.param(_body(90, 270), True, id="lying-sideways"),
    # Head nearest the camera: shoulders below the hips in the image, knees above them.
    pytest.param(_body(180, 0), True, id="lying-head-towards-the-camera"),
    pytest.param(_body(0, 90), False, id="seated-on-a-chair"),
    # Torso 65° from upright, past the 60° a torso needs to lie, but folded at the hips: the
    # thighs slope down forward, 120° off the torso's line.
    pytest.param(_body(65, 125), False, id="leaning-forward-to-stand-up"),
    pytest.param(
        _body(90, 180, nose=_at(_at(HIP, 90, TORSO), 160, 20)),
        False,
        id="bending-to-pick-something-up",
    ),
    pytest.param(_body(90, 270, trunk_seen=0.3), None, id="trunk-unseen"),
    # Knees unseen (under a blanket): where they were guessed says nothing (here folded, as
    # if bending); the head at hip level says lying ...
    pytest.param(_body(90, 180, knees_seen=0.1), True, id="knees-unseen-head-at-hip-level"),
    # ... and guessed straight, they do not make a leaning torso, head above the hips, lie.
    pytest.param(_body(65, 245, knees_seen=0.1), False, id="knees-unseen-head-above-the-hips"),
]


@pytest.mark.parametrize(("pts", "lying"), GEOMETRY)
def test_lying_is_a_torso_far_from_upright_in_a_body_straight_at_the_hips(
    pts: list[Landmark], lying: bool | None
) -> None:
    assert lying_from_landmarks(pts, PoseParams()) is lying


# ---------------------------------------------------------------------------------------------
# what the answer does to a track's posture

SQUAT = Box(219, 275, 389, 429)  # 170 x 154: lying head towards the camera, or seated


def _person(box: Box, ts: float) -> Track:
    tr = Track(1, box, ts, ts, ts, box.center, votes={"person": 0.9})
    _boxed(tr, box, ts)
    return tr


def _boxed(tr: Track, box: Box, ts: float) -> None:
    """The detector boxed the person at `box` in the sample at `ts`."""
    tr.detected_at, tr.boxed_at, tr.detected_box = ts, ts, box
    tr.detections += 1
    tr.see(ts, box)


@pytest.mark.parametrize(
    ("pose_lying", "pose_box", "posture"),
    [
        (True, SQUAT, Posture.LYING),
        (False, SQUAT, Posture.LOW),
        (None, SQUAT, Posture.LOW),  # no skeleton found
        # the answer was for where they were before moving on: not this box's
        (True, Box(SQUAT.x1 + 90, SQUAT.y1, SQUAT.x2 + 90, SQUAT.y2), Posture.LOW),
    ],
)
def test_a_squat_box_is_lying_where_its_skeleton_lies(
    pose_lying: bool | None, pose_box: Box, posture: Posture
) -> None:
    p = PostureParams()
    assert classify(SQUAT, None, p) is Posture.LOW
    tr = _person(SQUAT, 5.0)
    tr.pose_lying, tr.pose_box, tr.pose_at = pose_lying, pose_box, 5.0
    update_posture(tr, 5.0, p)
    assert tr.posture is posture
    assert (tr.lying_since == 5.0) is (posture is Posture.LYING)


# ---------------------------------------------------------------------------------------------
# real MediaPipe on real frames

A11_SIDE = "upfall/a11_trial2_cam2.mp4"  # lies head towards this camera for the whole clip
# Drawn by hand on the 1 s frame; the tests take the detector's own box nearest to them.
A11_LYING = Box(215, 275, 390, 430)
A11_SEATED = Box(520, 125, 635, 300)  # a man seated at the back right, boxed taller than wide


@pytest.fixture(scope="module")
def pose() -> Iterator[MediapipePose]:
    pytest.importorskip("mediapipe", reason="mediapipe not installed: scripts/install-pose")
    estimator = MediapipePose()
    yield estimator
    estimator.close()


@pytest.fixture(scope="module")
def detector(model_path: Path) -> YoloxDetector:
    return YoloxDetector(model_path)


def _media(shared_dir: Path, clip: str, t: float) -> Image:
    path = shared_dir / "media" / clip
    if not path.is_file():
        pytest.skip(f"footage missing: {path}")
    return frame_at(path, t)


def _person_near(detector: YoloxDetector, image: Image, drawn: Box) -> Detection:
    """The detector's person box (weak ones too) that is the one drawn by hand."""
    people = [d for d in detector.detect(image) if d.label == "person"]
    best = max(people, key=lambda d: d.box.iou(drawn), default=None)
    assert best is not None
    assert best.box.iou(drawn) >= 0.7, (drawn, [(d.box, d.score) for d in people])
    return best


def test_only_a_squat_box_the_detector_just_gave_is_asked_and_its_answer_held_for_3_s(
    shared_dir: Path, detector: YoloxDetector, pose: MediapipePose
) -> None:
    image = _media(shared_dir, A11_SIDE, 1.0)
    p = PostureParams()
    seated_box = _person_near(detector, image, A11_SEATED).box
    lying_box = _person_near(detector, image, A11_LYING).box
    assert classify(seated_box, None, p) is Posture.UPRIGHT
    assert classify(lying_box, None, p) is Posture.LOW
    calls = pose.calls

    seated = _person(seated_box, 1.0)
    ask_pose(pose, seated, image, 1.0, p)
    assert pose.calls == calls  # upright-shaped: the box says enough
    assert seated.pose_at is None

    lying = _person(lying_box, 1.0)
    ask_pose(pose, lying, image, 1.0, p)
    assert pose.calls == calls + 1
    assert (lying.pose_lying, lying.pose_box, lying.pose_at) == (True, lying_box, 1.0)

    for ts in (2.0, 3.9):  # the same box a moment later: the answer holds
        _boxed(lying, lying_box, ts)
        ask_pose(pose, lying, image, ts, p)
    assert pose.calls == calls + 1
    assert lying.pose_at == 1.0

    _boxed(lying, lying_box, 4.0)  # 3 s on: asked again
    ask_pose(pose, lying, image, 4.0, p)
    assert pose.calls == calls + 2
    assert lying.pose_at == 4.0

    moved = Box(lying_box.x1 + 60, lying_box.y1, lying_box.x2 + 60, lying_box.y2)
    assert moved.iou(lying_box) < PoseParams().same_box
    _boxed(lying, moved, 5.0)  # within 3 s, but somewhere else
    ask_pose(pose, lying, image, 5.0, p)
    assert pose.calls == calls + 3
    assert (lying.pose_box, lying.pose_at) == (moved, 5.0)

    # Not boxed by the detector in this sample (followed through the foreground, or an
    # unchanged frame): its box is no body's outline to crop, however long since the last ask.
    lying.see(9.0, moved)
    ask_pose(pose, lying, image, 9.0, p)
    assert pose.calls == calls + 3
    assert lying.pose_at == 5.0


@pytest.mark.parametrize(
    ("clip", "t", "drawn", "lying"),
    [
        pytest.param(A11_SIDE, 1.0, A11_LYING, True, id="lying-head-towards-the-camera"),
        pytest.param(
            "upfall/a08_trial2_cam1.mp4", 6.0, Box(200, 230, 320, 478), False, id="seated-front"
        ),
        pytest.param(
            "upfall/a08_trial3_cam2.mp4", 6.0, Box(123, 149, 291, 392), False, id="seated-side"
        ),
    ],
)
def test_the_skeleton_lies_for_someone_lying_and_not_for_someone_seated(
    shared_dir: Path,
    detector: YoloxDetector,
    pose: MediapipePose,
    clip: str,
    t: float,
    drawn: Box,
    lying: bool,
) -> None:
    image = _media(shared_dir, clip, t)
    box = _person_near(detector, image, drawn).box
    assert pose.lying(image, box) is lying


@pytest.mark.parametrize(
    ("t", "torso_lies"),
    [
        (9.0, True),  # sitting down, bent far over his knees
        (13.0, False),  # getting up, leaning forward
    ],
)
def test_leaning_forward_on_a_chair_is_not_lying(
    shared_dir: Path, detector: YoloxDetector, pose: MediapipePose, t: float, torso_lies: bool
) -> None:
    """falls/room_chair_fall_lowres.mp4: the man sits down and gets up leaning well forward;
    his box is squat, so the world model would ask."""
    image = _media(shared_dir, "falls/room_chair_fall_lowres.mp4", t)
    people = [d for d in detector.detect(image) if d.label == "person" and not d.weak]
    assert people, "the detector boxes him"
    box = max(people, key=lambda d: d.score).box
    assert classify(box, None, PostureParams()) is Posture.LOW
    pts = pose.landmarks(image, box)
    assert pts is not None
    assert lying_from_landmarks(pts, PoseParams()) is not True
    if torso_lies:
        # His torso is as far from upright as a lying one: only the fold at the hips says no.
        assert lying_from_landmarks(pts, PoseParams(max_hip_bend_deg=180.0)) is True


def test_every_pose_call_is_counted_per_camera(
    shared_dir: Path, detector: YoloxDetector, pose: MediapipePose
) -> None:
    """streamd_pose_calls_total per camera is PerceptionStats.pose_calls: it must count every
    call the camera's world model makes (the estimator itself is shared by all cameras)."""
    perception = Perception(detector, pose=pose)
    before = pose.calls
    for i, t in enumerate(range(10)):
        image = _media(shared_dir, "upfall/a11_trial2_cam2.mp4", float(t))
        perception.observe(Frame("side", image, float(t), float(t), i))
    assert perception.stats.pose_calls > 0  # he lies head towards the camera: boxed squat
    assert perception.stats.pose_calls == pose.calls - before


def test_boxes_cut_by_the_frame_or_too_small_are_not_asked(
    shared_dir: Path, pose: MediapipePose
) -> None:
    image = _media(shared_dir, A11_SIDE, 1.0)
    w = image.shape[1]
    calls = pose.calls
    for box in (
        Box(560, 380, w, 476),  # at the right edge: someone half out of view
        Box(0, 250, 120, 400),  # at the left edge
        Box(300, 0, 400, 100),  # at the top
        Box(300, 300, 340, 340),  # 40 px: too few pixels for a skeleton
    ):
        assert pose.lying(image, box) is None, box
    assert pose.calls == calls


# ---------------------------------------------------------------------------------------------
# weak squat boxes at a steady spot (perception/lying_spots.py)

WIDE = Box(170, 150, 300, 195)  # lying across the view
SQUARE = Box(40, 100, 120, 180)  # 80 x 80: seated, a chair, or lying head towards the camera


def _foregrounds(seconds: int, moving_at: int | None) -> Iterator[tuple[float, Foreground]]:
    """The real background model over a still scene, one sample a second; at `moving_at`
    something moves inside both boxes (an arm)."""
    bg = BackgroundModel()
    rng = np.random.default_rng(0)
    scene = rng.integers(90, 110, (240, 320, 3)).astype(np.uint8)
    for box in (WIDE, SQUARE):
        scene[int(box.y1) : int(box.y2), int(box.x1) : int(box.x2)] = (30, 30, 160)
    for t in range(seconds):
        img = scene.copy()
        if t == moving_at:
            for box in (WIDE, SQUARE):
                x, y = int(box.x1) + 10, int(box.y1) + 10
                img[y : y + 30, x : x + 30] = (200, 200, 200)
        yield float(t), bg.update(bg.prepare(img), float(t))


def _weak(box: Box) -> Detection:
    return Detection("person", 0, 0.2, box, weak=True)


def _spots(
    boxes: list[Box],
    moving_at: int | None,
    skeleton: Callable[[Box], bool | None] | None,
    seconds: int = 12,
) -> dict[Box, list[float]]:
    """When each weak box counted as someone lying."""
    spots = LyingSpots(PostureParams().lying_aspect)
    found: dict[Box, list[float]] = {b: [] for b in boxes}
    for t, fg in _foregrounds(seconds, moving_at):
        for d in spots.update(t, fg, [_weak(b) for b in boxes], [], [], skeleton):
            found[d.box].append(t)
    return found


def test_without_a_skeleton_a_squat_weak_box_is_nobody() -> None:
    """Both boxes stay put and something moves in both: the wide one is someone lying, the
    squat one, as likely a chair, is nobody."""
    found = _spots([WIDE, SQUARE], moving_at=1, skeleton=None)
    assert found[WIDE] == [float(t) for t in range(2, 12)]
    assert found[SQUARE] == []


class _Answers:
    """A skeleton's answers for one spot over time: what a pose estimator would say of the
    person in it (the real one is asked on a real frame in the next test but one)."""

    def __init__(self, answers: dict[float, bool | None]) -> None:
        self.answers = answers
        self.now = 0.0
        self.asked: list[float] = []

    def __call__(self, box: Box) -> bool | None:
        self.asked.append(self.now)
        return self.answers[self.now]


@pytest.mark.parametrize("moves", [False, True])
def test_a_squat_weak_box_counts_while_its_skeleton_lies(moves: bool) -> None:
    """Asked at most every 2 s. It counts while the last answer is "lying", once the spot is
    steady (3 samples over 2 s) and is a body: something moved in it, or the skeleton was
    found lying twice."""
    skeleton = _Answers({0.0: False, 2.0: True, 4.0: True, 6.0: False, 8.0: True, 10.0: None})
    spots = LyingSpots(PostureParams().lying_aspect)
    found = []
    for t, fg in _foregrounds(12, moving_at=1 if moves else None):
        skeleton.now = t
        found += [t for _ in spots.update(t, fg, [_weak(SQUARE)], [], [], skeleton)]
    assert skeleton.asked == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    # lying once, with nothing moving, is not yet enough
    assert found == ([2.0, 3.0] if moves else []) + [4.0, 5.0, 8.0, 9.0]


def test_a_squat_weak_box_too_small_for_a_skeleton_is_not_asked() -> None:
    small = Box(40, 100, 80, 140)  # 40 px
    skeleton = _Answers(dict.fromkeys(map(float, range(6)), True))
    assert _spots([small], moving_at=1, skeleton=skeleton, seconds=6) == {small: []}
    assert skeleton.asked == []


def test_the_weak_boxes_of_someone_lying_head_towards_the_camera_are_him(
    shared_dir: Path, detector: YoloxDetector, pose: MediapipePose
) -> None:
    """UP-Fall a11, side camera: the man lying on the mattress gets only weak boxes, squat
    ones (two overlapping: all of him and most of him). With the real skeleton asked about
    every weak box, they are someone lying once steady; nothing else is (the seated man is
    boxed confidently; the other weak boxes hold no lying skeleton). Without it, nobody."""
    image = _media(shared_dir, A11_SIDE, 1.0)
    detections = detector.detect(image)
    weak = [d for d in detections if d.weak and d.label == "person"]
    people = [d.box for d in detections if not d.weak and d.label == "person"]
    lying_box = _person_near(detector, image, A11_LYING).box
    assert lying_box in [d.box for d in weak]

    def found(skeleton: Callable[[Box], bool | None] | None) -> dict[float, list[Box]]:
        bg = BackgroundModel()
        spots = LyingSpots(PostureParams().lying_aspect)
        out: dict[float, list[Box]] = {}
        for t in map(float, range(5)):  # the same frame: he lies still
            fg = bg.update(bg.prepare(image), t)
            boxes = [d.box for d in spots.update(t, fg, weak, people, [], skeleton)]
            if boxes:
                out[t] = boxes
        return out

    with_pose = found(lambda b: pose.lying(image, b))
    assert sorted(with_pose) == [2.0, 3.0, 4.0]  # steady: three samples over two seconds
    for boxes in with_pose.values():
        assert lying_box in boxes
        assert all(b.covered_by(lying_box) > 0.5 for b in boxes), boxes
    assert found(None) == {}


# ---------------------------------------------------------------------------------------------
# model.pose


def test_model_pose_defaults_to_auto_and_rejects_other_values() -> None:
    assert parse_config("rules: []\n", "cfg.yaml").model.pose == "auto"
    assert parse_config("model: {pose: 'off'}\n", "cfg.yaml").model.pose == "off"
    with pytest.raises(ConfigError) as info:
        parse_config("rules: []\nmodel:\n  pose: 'yes'\n", "cfg.yaml")
    assert "cfg.yaml:3: model.pose" in str(info.value)
    assert "'auto', 'mediapipe' or 'off'" in str(info.value)


def _without_mediapipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if mediapipe were not installed (it is here): only its spec goes missing."""
    find_spec = importlib.util.find_spec

    def missing(name: str, package: str | None = None) -> object:
        return None if name == "mediapipe" else find_spec(name, package)

    monkeypatch.setattr("streamd.config.model.importlib.util.find_spec", missing)


def test_model_pose_mediapipe_without_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_mediapipe(monkeypatch)
    with pytest.raises(ConfigError) as info:
        parse_config("model:\n  pose: mediapipe\n", "cfg.yaml")
    message = str(info.value)
    assert "cfg.yaml:2: model.pose" in message
    assert "scripts/install-pose" in message
    assert load_pose("auto") is None  # auto: boxes only, no error


def test_model_pose_loads_mediapipe_where_it_is_installed() -> None:
    pytest.importorskip("mediapipe", reason="mediapipe not installed: scripts/install-pose")
    assert parse_config("model: {pose: mediapipe}\n", "cfg.yaml").model.pose == "mediapipe"
    for setting in ("auto", "mediapipe"):
        estimator = load_pose(setting)
        assert isinstance(estimator, MediapipePose), setting
        estimator.close()
    assert load_pose("off") is None

"""The world model's building blocks on synthetic input: zones, lines, posture and falls, and
still objects with owners (real BackgroundModel on drawn frames; people come from boxes that
stand in for the detector)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from streamd.ingest.frame import Frame
from streamd.perception.geometry import Box, Detection
from streamd.perception.model import Perception
from streamd.perception.objects import StillObject, StillObjects
from streamd.perception.posture import PostureParams, classify, update_posture
from streamd.perception.tracker import Track, Tracker, TrackInput
from streamd.perception.world import EventKind, Posture, SceneEvent, TrackKind, TrackState
from streamd.perception.zones import Line, Zone, ZoneSet

SQUARE = Zone("sq", ((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)))


@pytest.mark.parametrize(
    ("x", "y", "inside"),
    [(0.4, 0.4, True), (0.1, 0.4, False), (0.59, 0.21, True), (0.7, 0.7, False)],
)
def test_zone_contains_anchor(x: float, y: float, inside: bool) -> None:
    assert SQUARE.contains(x, y) is inside


def test_directed_line_in_and_out() -> None:
    line = Line("gate", (0.2, 0.5), (0.8, 0.5))  # pointing right: above is its left
    assert line.crossing((0.5, 0.4), (0.5, 0.6)) == "in"
    assert line.crossing((0.5, 0.6), (0.5, 0.4)) == "out"
    assert line.crossing((0.1, 0.4), (0.1, 0.6)) is None  # passes beside the segment
    assert line.crossing((0.5, 0.4), (0.6, 0.45)) is None  # does not cross


def _person(boxes: list[tuple[float, Box]], p: PostureParams) -> tuple[Track, list[EventKind]]:
    t0, b0 = boxes[0]
    tr = Track(1, b0, t0, t0, t0, b0.center, votes={"person": 0.9})
    kinds: list[EventKind] = []
    for ts, box in boxes:
        tr.detected_at, tr.boxed_at, tr.detected_box = ts, ts, box
        tr.detections += 1
        tr.see(ts, box)
        kinds += [e.kind for e in update_posture(tr, ts, p)]
    return tr, kinds


UP = Box(100, 100, 140, 260)  # 40 × 160
LOW = Box(95, 180, 150, 260)  # crouching
DOWN = Box(40, 220, 200, 262)  # lying on the floor


def test_fall_then_getting_up() -> None:
    p = PostureParams()
    seq = [(0.0, UP), (1.0, UP), (2.0, DOWN), (3.0, DOWN), (4.0, DOWN), (5.0, UP)]
    tr, kinds = _person(seq, p)
    assert kinds == [EventKind.FELL, EventKind.GOT_UP]
    assert tr.fallen_at is None
    assert tr.posture is Posture.UPRIGHT


def test_bending_down_and_back_up_is_not_a_fall() -> None:
    _, kinds = _person([(0.0, UP), (1.0, UP), (2.0, DOWN), (3.0, UP), (4.0, UP)], PostureParams())
    assert kinds == []


def test_lying_down_slowly_is_lying_not_a_fall() -> None:
    seq = [(0.0, UP), (1.0, LOW), (2.0, LOW), (3.0, LOW), (4.0, LOW), (5.0, DOWN), (6.0, DOWN)]
    tr, kinds = _person(seq, PostureParams())
    assert kinds == []
    assert tr.posture is Posture.LYING
    assert tr.lying_since == 5.0


def test_fall_seen_end_on_is_lying_from_when_the_fall_was_seen() -> None:
    """Falling towards the camera the body lands foreshortened (not wide): the box plunges and
    stays low. Once the fall is confirmed the person has been on the floor since it was seen,
    not only from the next sample on."""
    plunged = Box(90, 210, 170, 300)  # top dropped by 0.7 of the height; as tall as wide
    seq = [(0.0, UP), (1.0, UP), (2.0, plunged), (3.0, plunged), (4.0, plunged)]
    tr, kinds = _person(seq, PostureParams())
    assert kinds == [EventKind.FELL]
    assert tr.posture is Posture.LYING
    assert tr.lying_since == 2.0


def test_a_wide_box_cut_by_the_top_of_the_frame_is_not_lying() -> None:
    """An arm reaching in from above (a hand taking a bottle off a table) is boxed as a wide
    "person"; only part of a body shows, so its shape is no posture. The same box lower down,
    whole in the frame, is someone lying."""
    p = PostureParams()
    assert classify(Box(120, 0, 330, 145), None, p) is Posture.LOW
    assert classify(Box(120, 100, 330, 245), None, p) is Posture.LYING


def test_walking_in_under_the_camera_is_not_a_fall() -> None:
    """Right under a high camera someone's head is above the frame: the box is cut by the
    top edge. As they walk further in, its top comes down and it widens (from above, a body
    is foreshortened): no fall is measured from a top that was the frame's edge."""
    cut = Box(100, 0, 160, 170)  # upright-shaped, head out of view
    wide = Box(80, 110, 280, 250)  # further in, seen from above
    _, kinds = _person(
        [(0.0, cut), (1.0, cut), (2.0, wide), (3.0, wide), (4.0, wide)], PostureParams()
    )
    assert EventKind.FELL not in kinds


def test_someone_elsewhere_does_not_take_over_a_fallen_person() -> None:
    """A lying body's box is wide, so its diagonal reaches far: a person detected across the
    room a second later is someone else, not the fallen one walking off."""
    tracker = Tracker()
    (fallen,) = tracker.update(0.0, [TrackInput(Box(0, 430, 470, 480), "person", 0.9)])
    fallen.fallen_at = 0.0
    (other,) = tracker.update(1.0, [TrackInput(Box(266, 169, 320, 244), "person", 0.9)])
    assert other.track_id != fallen.track_id
    # sitting up where they lie is still the same person
    (up,) = tracker.update(2.0, [TrackInput(Box(150, 390, 250, 480), "person", 0.9)])
    assert up.track_id == fallen.track_id


def test_a_person_going_down_keeps_their_track_through_the_change_of_shape() -> None:
    """At 1 fps a fall turns a tall box into a wide one of about the same area, its height
    more than halved (from the empty-room clip: 155x412 upright, 372x173 a second later)."""
    tracker = Tracker()
    (up,) = tracker.update(0.0, [TrackInput(Box(623, 64, 778, 476), "person", 0.8)])
    (down,) = tracker.update(1.0, [TrackInput(Box(232, 293, 604, 466), "person", 0.6)])
    assert down.track_id == up.track_id
    # someone a third the height nearby is someone else (further away), not the same person
    (far,) = tracker.update(2.0, [TrackInput(Box(500, 300, 530, 357), "person", 0.6)])
    assert far.track_id != up.track_id


def test_a_seated_person_keeps_their_own_box_over_the_chair_under_them() -> None:
    """Someone seated (UP-Fall a04, camera 2): the chair's box overlaps their track more than
    their own, partly hidden, person box does. Like matches like first: they keep the person
    box, so it is not left over for someone nearer to take."""
    tracker = Tracker()
    tracker.update(0.0, [TrackInput(Box(518, 123, 640, 316), "person", 0.8)])
    seated = tracker.update(1.0, [TrackInput(Box(518, 123, 640, 316), "person", 0.8)])[0]
    chair, person = tracker.update(
        2.0,
        [
            TrackInput(Box(525, 162, 622, 312), "chair", 0.4),
            TrackInput(Box(514, 125, 586, 252), "person", 0.6),
        ],
    )
    assert person.track_id == seated.track_id
    assert chair.track_id != seated.track_id


def test_a_walker_keeps_their_track_over_a_nearer_stale_one() -> None:
    """UP-Fall a06 at one phase: a man walks left fast (≈180 px a sample); a track lost at
    the left edge seconds earlier is nearer to his next box than his own track. Where his
    track was heading decides: he keeps it (and is not left behind as a "body" on the
    floor)."""
    tracker = Tracker()
    (stale,) = tracker.update(0.0, [TrackInput(Box(0, 200, 84, 480), "person", 0.8)])
    walker_boxes = [Box(486, 170, 639, 474), Box(426, 170, 550, 455), Box(263, 172, 368, 412)]
    walker = None
    for t, box in zip((2.0, 3.0, 4.0), walker_boxes, strict=True):
        (walker,) = tracker.update(t, [TrackInput(box, "person", 0.8)])
    assert walker is not None
    assert walker.track_id != stale.track_id
    (now,) = tracker.update(5.0, [TrackInput(Box(76, 168, 162, 426), "person", 0.8)])
    assert now.track_id == walker.track_id


def test_a_walker_keeps_their_track_past_a_box_across_their_path() -> None:
    """The high-camera room clip: a man walks right at ≈100 px a sample past a wide box
    another person track holds (there a junk track followed as a body). His next box overlaps
    that wide box (IoU 0.24) and not his own last one (IoU 0); where he was heading (his last
    box moved on at his pace) overlaps it most, so he keeps his track."""
    tracker = Tracker()
    wide = Box(386, 120, 805, 304)
    walker = other = None
    for t, box in zip((1.0, 2.0, 3.0), [Box(149, 41, 278, 293), Box(162, 54, 302, 294),
                                         Box(260, 41, 385, 327)], strict=True):  # fmt: skip
        walker, other = tracker.update(
            t, [TrackInput(box, "person", 0.8), TrackInput(wide, "person", 0.4)]
        )
    assert walker is not None
    assert other is not None
    assert walker.track_id != other.track_id
    # the wide box is not detected now (there it was a body being followed)
    (now,) = tracker.update(4.0, [TrackInput(Box(389, 31, 509, 337), "person", 0.8)])
    assert now.track_id == walker.track_id


def test_a_vanished_unnamed_region_does_not_take_a_person_detection() -> None:
    """Motion seen once (a flicker by the wall) and gone the next sample is not where a
    person detected later, a body's length away, came from."""
    tracker = Tracker()
    (blob,) = tracker.update(0.0, [TrackInput(Box(314, 23, 351, 181), None, 0.0, moving=True)])
    tracker.update(1.0, [TrackInput(Box(623, 64, 778, 476), "person", 0.8)])
    _, lying = tracker.update(
        2.0,
        [
            TrackInput(Box(40, 40, 80, 80), None, 0.0, moving=True),
            TrackInput(Box(232, 130, 404, 300), "person", 0.6),
        ],
    )
    assert lying.track_id != blob.track_id
    # still there in the previous sample, the same region being named is the usual case
    tracker2 = Tracker()
    (blob2,) = tracker2.update(0.0, [TrackInput(Box(314, 23, 351, 181), None, 0.0, moving=True)])
    (named,) = tracker2.update(1.0, [TrackInput(Box(330, 60, 380, 230), "person", 0.7)])
    assert named.track_id == blob2.track_id


class _Boxes:
    """Stands in for the detector: returns whatever person boxes the test sets per frame,
    confident ones (`boxes`) and ones scored below its threshold (`weak`)."""

    def __init__(self) -> None:
        self.boxes: list[Box] = []
        self.weak: list[Box] = []

    def detect(self, image: object) -> list[Detection]:
        return [Detection("person", 0, 0.9, b) for b in self.boxes] + [
            Detection("person", 0, 0.2, b, weak=True) for b in self.weak
        ]


def _frame(t: float, people: list[Box], bag: Box | None, still: Box | None = None) -> Frame:
    rng = np.random.default_rng(0)  # the same texture every frame: a fixed camera
    img = (rng.integers(90, 110, (240, 320, 3))).astype(np.uint8)
    if still is not None:  # part of the scene from the start
        img[int(still.y1) : int(still.y2), int(still.x1) : int(still.x2)] = (60, 90, 60)
    for b in people:
        img[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)] = (30, 30, 160)
    if bag is not None:
        img[int(bag.y1) : int(bag.y2), int(bag.x1) : int(bag.x2)] = (200, 60, 20)
    return Frame("cam", img, t, t, int(t))


def _play(
    people_at: Callable[[int], list[Box]], bag: Box, seconds: int
) -> tuple[list[SceneEvent], list[TrackState]]:
    """A bag that comes into view at t = 4 s and the people `people_at` each second gives;
    every scene event, and the objects at the end."""
    det = _Boxes()
    world_model = Perception(det)
    events: list[SceneEvent] = []
    objects: list[TrackState] = []
    for t in range(seconds):
        people = det.boxes = people_at(t)
        world = world_model.observe(_frame(float(t), people, bag if t >= 4 else None))
        events += list(world.events)
        objects = list(world.objects())
    return events, objects


def _owner(
    carrying: Box, beside: Box, then: Callable[[int], list[Box]]
) -> Callable[[int], list[Box]]:
    """Nobody until 4 s, then the owner carrying the bag in (it is inside their box), from
    6 s standing beside it where they put it down, from 12 s whatever `then` says."""
    return lambda t: [] if t < 4 else [carrying] if t < 6 else [beside] if t < 12 else then(t)


def test_bag_left_by_its_owner_is_unattended_once_they_walk_away() -> None:
    bag = Box(150, 170, 170, 190)

    def walks_off(t: int) -> list[Box]:  # to the left, one step a second, out of the frame
        x = 120 - 25 * (t - 11)
        return [Box(x, 110, x + 28, 200)] if x > 0 else []

    people = _owner(Box(122, 110, 172, 200), Box(120, 110, 148, 200), walks_off)
    events, objects = _play(people, bag, 30)
    placed = [e for e in events if e.kind is EventKind.PLACED]
    unattended = [e for e in events if e.kind is EventKind.UNATTENDED]
    assert len(placed) == 1
    assert placed[0].details["owner_id"] is not None
    assert len(unattended) == 1
    # owner is > 2 bag widths (40 px) from the bag from t=13 (box right edge 120-50+28 = 98)
    assert 12.0 <= unattended[0].ts <= 14.0
    (obj,) = objects
    assert obj.kind is TrackKind.OBJECT
    assert obj.owner_id == placed[0].details["owner_id"]
    assert obj.unattended_since == unattended[0].ts


@pytest.mark.parametrize("phase", [0.0, 0.2, 0.4, 0.6, 0.8])
def test_bag_dropped_without_stopping_has_its_owner_at_any_sampling_phase(phase: float) -> None:
    """Someone walks through carrying a bag and sets it down in stride, two bag widths a
    second. Wherever the 1 fps samples fall, the carrier is its owner and it is unattended
    once they are > 2 widths away (40 px: from t = 6.75, when their box's left edge passes
    x = 210)."""
    det = _Boxes()
    world_model = Perception(det)
    bag = Box(150, 170, 170, 190)
    events = []
    for i in range(0, 20):
        t = i + phase
        x = -60 + 40 * t  # left edge; the bag hangs from their hand until t = 5
        people = [Box(x, 110, x + 40, 200)] if -40 < x < 300 else []
        det.boxes = people
        carried = Box(x + 25, 140, x + 45, 160)
        world = world_model.observe(_frame(t, people, bag if t >= 5 else carried))
        events += list(world.events)
    placed = [e for e in events if e.kind is EventKind.PLACED and e.box is not None]
    unattended = [e for e in events if e.kind is EventKind.UNATTENDED]
    assert [e.details["owner_id"] for e in placed] == [1]
    assert len(unattended) == 1
    assert 6.0 <= unattended[0].ts <= 7.75


def test_demo_scene_alerts_in_every_cycle_at_any_sampling_phase() -> None:
    """The built-in demo (no detector: motion and still regions only) fires its bag rule in
    every 60 s cycle wherever the 1 fps samples fall; a phase where the walker is a step past
    the bag when it first reads as still once lost the owner and never alerted."""
    from streamd.config import RuleConfig
    from streamd.ingest import demo
    from streamd.rules.compiler import compile_rule
    from streamd.rules.engine import RuleRunner

    text = "alert when a bag is left unattended for 10 seconds"
    fired: dict[float, list[int]] = {}
    for phase in (0.0, 0.1, 0.2, 0.5, 0.8):
        runner = RuleRunner("demo", RuleConfig(name="r", text=text), compile_rule(text))
        world_model = Perception(None)
        rng = np.random.default_rng(7)
        background = demo._background(rng)
        fired[phase] = []
        for i in range(2 * int(demo.CYCLE_S)):
            t = i + phase
            image = demo.render(t, background, rng)
            world = world_model.observe(Frame("demo", image, 1000.0 + t, t, i))
            fired[phase] += [int(t // demo.CYCLE_S) for c in runner.step(world) if c.kind == "new"]
    assert fired == {phase: [0, 1] for phase in fired}


def test_where_someone_stood_at_startup_is_not_a_thing_once_they_go() -> None:
    """The model starts with someone standing in view, so its background holds them. When
    they walk off, what was behind them differs from that background and reads as a still
    region: it is not a thing anyone placed. A bag set down on that spot later is."""
    det = _Boxes()
    world_model = Perception(det)
    standing = Box(150, 100, 180, 200)
    placed = []
    for t in range(0, 30):
        if t < 6:
            people = [standing]
        elif t < 12:  # walks off to the right, out of view by t = 12
            x = 150 + 30 * (t - 5)
            people = [Box(x, 100, x + 30, 200)] if x < 320 else []
        elif t < 16:
            people = []
        elif t < 19:  # someone brings a bag to the same spot and stands by it
            people = [Box(140, 100, 170, 200)]
        else:
            x = 140 - 30 * (t - 18)
            people = [Box(x, 100, x + 30, 200)] if x > 0 else []
        det.boxes = people
        bag = Box(165, 180, 185, 198) if t >= 17 else None
        world = world_model.observe(_frame(float(t), people, bag))
        placed += [e for e in world.events if e.kind is EventKind.PLACED]
    assert len(placed) == 1
    assert placed[0].box is not None
    assert placed[0].box.iou(Box(165, 180, 185, 198)) > 0.5
    assert placed[0].ts >= 17.0


def test_going_down_then_out_of_view_is_not_a_fall() -> None:
    """Someone's box drops and widens (walking out under a high camera looks so at 1 fps),
    then they are nowhere: neither detected nor any foreground where they were. Someone who
    fell would still be there, so this is no fall, even when something later shows up on
    that spot (a bag they left tipping over) that could pass for a body on the floor."""
    det = _Boxes()
    world_model = Perception(det)
    kinds = []
    for t in range(0, 16):
        if t < 3:
            people = []
        elif t < 6:  # walks in, upright
            x = 60 + 30 * (t - 3)
            people = [Box(x, 60, x + 30, 200)]
        elif t == 6:
            people = [Box(115, 128, 215, 200)]  # low and wide: fall-shaped
        else:
            people = []
        det.boxes = people
        bag = Box(145, 170, 200, 198) if t >= 9 else None
        world = world_model.observe(_frame(float(t), people, bag))
        kinds += [e.kind for e in world.events]
    assert EventKind.FELL not in kinds
    assert EventKind.PLACED in kinds  # the thing on the floor is seen, as a thing


def test_a_body_on_the_floor_boxed_twice_is_one_person() -> None:
    """The detector often boxes a lying body twice, whole and in part, overlapping less
    than its own suppression threshold. That is one person on the floor: one lying track,
    which keeps the fall, so a lying or fall rule alerts once."""
    det = _Boxes()
    world_model = Perception(det)
    lying_counts = []
    fell = []
    for t in range(0, 14):
        if t < 3:
            people: list[Box] = []
        elif t < 7:
            people = [Box(140, 60, 170, 200)]
        else:  # on the floor: the whole body, and its legs again as a second box
            people = [Box(90, 130, 240, 200), Box(170, 150, 250, 200)]
        det.boxes = people
        world = world_model.observe(_frame(float(t), people, None))
        fell += [e for e in world.events if e.kind is EventKind.FELL]
        lying_counts.append(
            sum(1 for tr in world.visible(frozenset({"person"})) if tr.posture is Posture.LYING)
        )
    assert len(fell) == 1
    assert lying_counts[9:] == [1] * 5


def test_a_fall_the_tracker_cannot_link_is_still_that_persons_fall() -> None:
    """From one sample to the next a falling person's box can change too much for the
    tracker to link (upright 140 px tall, then a body 35 px high): the detector's new box is
    born as a new track just as the person's own track is lost. That newcomer is them; the
    fall is seen on their track, once."""
    det = _Boxes()
    world_model = Perception(det)
    fell = []
    for t in range(0, 12):
        if t < 3:
            people: list[Box] = []
        elif t < 7:
            people = [Box(140, 60, 170, 200)]
        else:
            people = [Box(95, 165, 235, 200)]
        det.boxes = people
        world = world_model.observe(_frame(float(t), people, None))
        fell += [e for e in world.events if e.kind is EventKind.FELL]
    assert [e.track_id for e in fell] == [1]
    assert 6.0 <= fell[0].ts <= 7.0


def test_someone_crossing_faster_than_the_tracker_links_does_not_fall() -> None:
    """Walking briskly across a near camera's view, someone moves further between 1 fps
    samples than the tracker links: the newcomer where they are now is them, upright, and
    nothing (no followed foreground, no ghost) turns into a fall."""
    det = _Boxes()
    world_model = Perception(det)
    kinds = []
    for t in range(0, 12):
        x = 10 + 70 * (t - 3)
        people = [Box(x, 60, x + 40, 200)] if t >= 3 and x + 40 < 320 else []
        det.boxes = people
        world = world_model.observe(_frame(float(t), people, None))
        kinds += [e.kind for e in world.events]
    assert EventKind.FELL not in kinds


class _Named(_Boxes):
    """People as set, plus a named box on the samples listed (a detector calling a thing)."""

    def __init__(self, named: dict[int, Detection]) -> None:
        super().__init__()
        self.named = named
        self.t = 0

    def detect(self, image: object) -> list[Detection]:
        extra = [self.named[self.t]] if self.t in self.named else []
        return super().detect(image) + extra


def test_one_detection_does_not_name_a_still_object() -> None:
    """A still object takes a class only once it was detected as that class in more than one
    sample: a backpack called "cat" once stays unnamed (and a rule about bags still sees it);
    called "backpack" twice, it is a backpack. The detection boxes the whole thing, more than
    the still region that differs from the background."""
    bag = Box(150, 170, 170, 190)
    whole = Box(146, 160, 174, 192)  # iou with the region < 0.3, but contains it
    det = _Named({20: Detection("cat", 0, 0.6, whole)})
    det.named |= {t: Detection("backpack", 0, 0.5, whole) for t in (24, 26)}
    world_model = Perception(det)
    labels = {}
    for t in range(0, 28):
        det.t = t
        x = 20 + (37 * t) % 250  # someone pacing far above: every frame changes
        det.boxes = [Box(x, 20, x + 28, 100)]
        world = world_model.observe(_frame(float(t), det.boxes, bag if t >= 8 else None))
        (obj,) = world.objects() or (None,)
        labels[t] = None if obj is None else obj.label
    assert labels[21] is None  # seen as a cat once
    assert labels[27] == "backpack"


def test_thing_appearing_beside_a_passer_by_is_not_left() -> None:
    """A patch that appears next to someone's path (a reflection, a light coming on, a door
    opening behind glass) was never inside anyone's box: nobody brought it, so it is placed
    but never unattended, however close they pass and however far they then go."""
    det = _Boxes()
    world_model = Perception(det)
    patch = Box(150, 170, 170, 190)
    events = []
    for t in range(0, 25):
        x = 290 - 15 * t  # walks right to left, slowly, passing just above the patch
        people = [Box(x, 60, x + 28, 150)] if x > 0 else []
        det.boxes = people
        world = world_model.observe(_frame(float(t), people, patch if t >= 8 else None))
        events += list(world.events)
    kinds = [e.kind for e in events]
    assert EventKind.PLACED in kinds
    assert EventKind.UNATTENDED not in kinds


def test_still_part_of_a_seated_person_is_not_an_object() -> None:
    """Someone sitting still shifts a leg: the new place of the leg is still foreground a
    moment later, at times just outside their box (the detector crops it). It is part of
    them, not a thing they put down."""
    det = _Boxes()
    world_model = Perception(det)
    events = []
    seated = [Box(100, 80, 160, 200), Box(100, 80, 160, 180)]  # box flickers (knee cropped)
    for t in range(0, 25):
        det.boxes = [seated[t % 2]]
        # they fidget (a hand goes from side to side), so every frame goes to the detector
        hand = Box(90, 100, 100, 140) if t % 2 else Box(160, 100, 170, 140)
        leg = Box(110, 182, 150, 198) if t >= 8 else None  # the leg moved here at t=8
        world = world_model.observe(_frame(float(t), [Box(100, 80, 160, 180), hand], leg))
        events += list(world.events)
    assert [e for e in events if e.kind is EventKind.PLACED] == []


def test_object_taken_away_is_removed() -> None:
    det = _Boxes()
    world_model = Perception(det)
    bottle = Box(150, 170, 170, 200)
    removed = []
    for t in range(0, 20):
        world = world_model.observe(_frame(float(t), [], bottle if t < 8 else None))
        removed += [e for e in world.events if e.kind is EventKind.REMOVED]
    assert len(removed) == 1
    assert removed[0].box is not None
    assert removed[0].box.iou(bottle) > 0.3
    assert 8.0 <= removed[0].ts <= 11.0


def test_zone_entered_and_line_crossed_by_a_track() -> None:
    det = _Boxes()
    zones = ZoneSet((Zone("right", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))),),
                    (Line("mid", (0.5, 1.0), (0.5, 0.0)),))  # fmt: skip
    world_model = Perception(det, zones=zones)
    events = []
    for t in range(0, 12):
        x = 20 + 25 * t  # walks left to right across the middle
        det.boxes = [Box(x, 100, x + 30, 200)]
        world = world_model.observe(_frame(float(t), det.boxes, None))
        events += list(world.events)
    entered = [e for e in events if e.kind is EventKind.ZONE_ENTERED]
    crossed = [e for e in events if e.kind is EventKind.LINE_CROSSED]
    assert [e.zone for e in entered] == ["right"]
    assert [(e.line, e.direction) for e in crossed] == [("mid", "in")]
    assert entered[0].track_id == crossed[0].track_id


def test_a_body_the_detector_scores_low_keeps_its_track_and_falls() -> None:
    """Seen end-on after a fall towards the camera, a body on the floor is boxed about as
    tall as wide and the detector scores it below its threshold. That weak box, where the
    person went down and new to the background, keeps their track (its top is the body's
    top, unlike a foreground blob's), so the fall is theirs and is seen."""
    det = _Boxes()
    world_model = Perception(det)
    fell = []
    down = Box(120, 150, 190, 215)  # 70 × 65, its top 90 px below the standing head
    tracks = []
    for t in range(0, 12):
        people = [Box(140, 60, 170, 200)] if 3 <= t < 7 else []
        det.boxes, det.weak = people, ([down] if t >= 7 else [])
        world = world_model.observe(_frame(float(t), people + det.weak, None))
        fell += [e for e in world.events if e.kind is EventKind.FELL]
        tracks.append({tr.track_id for tr in world.visible(frozenset({"person"}))})
    assert [e.track_id for e in fell] == [1]
    assert 6.0 <= fell[0].ts <= 7.0
    assert tracks[7:] == [{1}] * 5


def test_weak_boxes_alone_are_nobody() -> None:
    """A weak box never starts a track, and one on something that has always been there
    (furniture the detector half takes for a person) does not keep a person who walked off
    beside it: they are gone, not fallen."""
    det = _Boxes()
    world_model = Perception(det)
    chair = Box(110, 150, 180, 215)
    kinds = []
    seen: set[int] = set()
    for t in range(0, 14):
        people = [Box(140 + 40 * max(0, t - 6), 60, 170 + 40 * max(0, t - 6), 200)]
        people = people if 3 <= t < 9 else []
        det.boxes, det.weak = people, [chair]
        world = world_model.observe(_frame(float(t), people, None, still=chair))
        kinds += [e.kind for e in world.events]
        seen |= {tr.track_id for tr in world.visible(frozenset({"person"}))}
    assert EventKind.FELL not in kinds
    assert seen == {1}


@pytest.mark.parametrize("shifts", [True, False])
def test_someone_lying_since_before_the_camera_saw_them(shifts: bool) -> None:
    """UP-Fall a11, camera 1: a man lies along the bottom edge from the first frame (so the
    background holds him) and is never seen standing; the detector only ever gives him a weak,
    wide box, at the same place every sample, while someone walks about at the back. Now and
    then he moves an arm: he is someone lying there. The same box on something that never
    moves (furniture the detector half takes for a person) stays nobody."""
    det = _Boxes()
    world_model = Perception(det)
    body = Box(40, 190, 200, 235)  # 160 x 45, lying across the view
    arm = Box(80, 195, 120, 225)
    lying: list[tuple[float, float | None]] = []
    kinds = []
    for t in range(0, 16):
        x = 20 + 8 * t  # someone walking at the back keeps the frames changing
        walker = Box(x, 20, x + 30, 110)
        moved = shifts and 6 <= t < 8
        det.boxes, det.weak = [walker], [body]
        world = world_model.observe(
            _frame(float(t), [walker] + ([arm] if moved else []), None, still=body)
        )
        kinds += [e.kind for e in world.events]
        lying += [
            (float(t), tr.lying_since)
            for tr in world.visible(frozenset({"person"}))
            if tr.posture is Posture.LYING and tr.box.iou(body) > 0.5
        ]
    assert EventKind.FELL not in kinds
    if shifts:
        # found after three samples over two seconds, the first of which it moved in
        assert lying
        assert lying[0][0] <= 9.0
        assert [t for t, _ in lying] == [float(t) for t in range(int(lying[0][0]), 16)]
    else:
        assert lying == []


@pytest.mark.parametrize("boxed", [True, False])
def test_someone_lying_still_in_a_weak_box_stays_one_person(boxed: bool) -> None:
    """UP-Fall a11, camera 1: a man lies along the bottom edge from the first frame (so the
    background holds him). For a few seconds the detector boxes him confidently, then only
    weakly, at the same place, for much longer than a lost track is kept, and he lies still
    (nothing in his box moves) while someone walks about at the back. He is the one person
    the detector boxed lying there all along: one track, lying the whole time, not a new
    person each time his track would lapse. The same weak box where the detector never
    boxed anyone, and where nothing moves, stays nobody."""
    det = _Boxes()
    world_model = Perception(det)
    body = Box(40, 190, 200, 235)  # 160 x 45, lying across the view
    ids: list[set[int]] = []
    kinds = []
    for t in range(0, 30):
        x = 20 + 8 * t  # someone walking at the back keeps the frames changing
        walker = Box(x, 20, x + 30, 110)
        confident = boxed and t < 4
        det.boxes = [walker] + ([body] if confident else [])
        det.weak = [] if confident else [body]
        world = world_model.observe(_frame(float(t), [walker], None, still=body))
        kinds += [e.kind for e in world.events]
        ids.append(
            {
                tr.track_id
                for tr in world.visible(frozenset({"person"}))
                if tr.posture is Posture.LYING and tr.box.iou(body) > 0.5
            }
        )
    assert EventKind.FELL not in kinds
    if boxed:
        # out of sight only until the weak box has been found there three samples over two
        # seconds (a flicker is not him), then him again, the same track, to the end
        assert all(len(s) == 1 for s in ids[6:])
        assert len(set().union(*ids)) == 1
    else:
        assert not any(ids)


def test_a_body_boxed_in_pieces_is_one_person() -> None:
    """The detector boxes a body on the floor cut by the frame's edge as two pieces that do
    not overlap (head on one side, legs on the other). A person first seen already lying,
    next to someone who just fell, within their body length, is them: one lying track, one
    lying alert."""
    det = _Boxes()
    world_model = Perception(det)
    lying = []
    for t in range(0, 14):
        if t < 3:
            people: list[Box] = []
        elif t < 7:
            people = [Box(140, 60, 170, 200)]
        elif t < 8:
            people = [Box(95, 165, 235, 200)]
        else:
            people = [Box(125, 165, 235, 200), Box(10, 170, 80, 200)]
        det.boxes = people
        world = world_model.observe(_frame(float(t), people, None))
        lying.append(
            sorted(
                tr.track_id
                for tr in world.visible(frozenset({"person"}))
                if tr.posture is Posture.LYING
            )
        )
    assert lying[8:] == [[1]] * 6


def test_only_an_owner_seen_back_by_a_left_object_re_attends_it() -> None:
    """PETS 2006 at one sampling phase: the owner walks off (the bag is unattended), the
    detector loses him, and the still region grows a little (his shadow) so that where he was
    last seen comes within reach. His old place re-attends nothing; he himself, seen back by
    it, does."""
    objects = StillObjects(iter(range(100, 200)).__next__)
    bag = StillObject(7, Box(306, 196, 349, 236), since=32.5, last_seen=35.5, owner_id=9)
    bag.unattended_since = 34.4
    owner = Track(9, Box(212, 133, 256, 250), 20.0, 34.5, 34.5, (234.0, 191.0))
    assert objects._attend(bag, 35.5, [owner]) == []
    assert bag.unattended_since == 34.4
    owner.see(36.5, Box(262, 133, 300, 250))
    (event,) = objects._attend(bag, 36.5, [owner])
    assert event.kind is EventKind.ATTENDED
    assert bag.unattended_since is None


def test_an_owner_walking_out_of_the_frame_leaves_their_bag_at_once() -> None:
    """ABODA at one sampling phase: the owner stands by his bag, steps towards the camera
    (his box cut by the bottom edge) and is out of view a second later. The bag is
    unattended from that sample, not after the grace an owner lost for a moment gets where
    he was last seen (2 s), and his last box over it does not make it a part of him."""
    bag = Box(150, 200, 170, 220)

    def steps_out(t: int) -> list[Box]:  # a step at the camera, cut by the bottom edge; gone
        return [Box(125, 150, 165, 240)] if t == 12 else []

    people = _owner(Box(140, 130, 175, 225), Box(118, 130, 148, 220), steps_out)
    events, _ = _play(people, bag, 24)
    unattended = [e for e in events if e.kind is EventKind.UNATTENDED]
    assert len(unattended) == 1
    assert 12.0 < unattended[0].ts <= 13.0


def test_walking_off_from_where_one_stood_keeps_ones_track() -> None:
    """Someone standing since before the camera started is part of its background: when they
    walk off (further in one sample than the tracker links), the place they stood turns into
    foreground, their own ghost, which their track matches as an unnamed moving region. The
    person detected a stride away is them, not a newcomer, and their ghost is no body of
    theirs to follow onto the floor."""
    det = _Boxes()
    world_model = Perception(det)
    ids = []
    for t in range(0, 9):
        x = 200 if t < 5 else 50 if t == 5 else 20
        people = [Box(x, 50, x + 40, 190)]
        det.boxes = people
        world = world_model.observe(_frame(float(t), people, None))
        ids.append(tuple(tr.track_id for tr in world.visible(frozenset({"person"}))))
    assert ids[5:] == [ids[4]] * 4


def test_a_walker_whose_box_went_to_an_old_track_is_not_followed_onto_the_floor() -> None:
    """Someone walks back and forth faster than the tracker links at 1 fps: the track of where
    they were lost a few seconds ago takes their box when they come back near it, and the track
    they had a moment ago is lost. They are detected where that track was heading: it walked
    on, and the long shadow trailing at their feet is no body lying on the floor."""
    det = _Boxes()
    world_model = Perception(det)
    # left edge of their box, per second: lost at the left edge at 7 s, back at 8 s at the right
    path = {3: 10, 4: 10, 5: 10, 6: 10, 8: 250, 9: 140, 10: 5, 11: 5}
    kinds = []
    for t in range(0, 14):
        x = path.get(t)
        people = [] if x is None else [Box(x, 50, x + 40, 190)]
        det.boxes = people
        frame = _frame(float(t), people, None)
        if t in (10, 11):  # their shadow on the floor, trailing behind them
            frame.image[170:200, 45:165] = (50, 50, 50)
        world = world_model.observe(frame)
        kinds += [e.kind for e in world.events]
    assert EventKind.FELL not in kinds


def test_a_still_owner_cropped_short_for_a_moment_still_attends_their_bag() -> None:
    """UP-Fall a06 at one phase: a man seated still all along has a small still region by his
    foot; now and then the detector crops his box short (legs left out), putting it more than
    two region widths away. Where he is has not changed: his recent boxes taken there still
    outline him, and the region stays attended."""
    objects = StillObjects(iter(range(100, 200)).__next__)
    foot = StillObject(7, Box(616, 286, 630, 306), since=10.0, last_seen=19.0, owner_id=9)
    whole = Box(515, 126, 640, 320)
    owner = Track(9, whole, 5.0, 5.0, 5.0, whole.center)
    for t in (17.0, 18.0, 19.0):
        owner.see(t, whole)
    owner.see(20.0, Box(515, 126, 615, 252))  # cropped short: 34 px above the region
    assert objects._attend(foot, 20.0, [owner]) == []
    assert foot.unattended_since is None
    # someone who walked off is measured from where they are now
    walker = Track(9, whole, 5.0, 5.0, 5.0, whole.center)
    for t, x in ((18.0, 515), (19.0, 455), (20.0, 395)):
        walker.see(t, Box(x, 126, x + 100, 320))
    (event,) = objects._attend(foot, 20.0, [walker])
    assert event.kind is EventKind.UNATTENDED

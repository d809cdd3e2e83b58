"""A small IoU-then-centroid tracker (1-5 samples per second).

Why not ByteTrack (supervision): it installs here, but pulls matplotlib, pillow and requests
into a daemon for a dozen lines of matching, and its Kalman motion model is tuned for 25-30
fps video, where boxes overlap from frame to frame. At the 1-2 fps the daemon samples, a car
moves more than its own length between samples, so after IoU matching this tracker also
matches by centroid distance relative to the box size.

A track keeps a weighted vote of the labels the detector gave it (a top-down car flickers
between "cell phone", "bus" and "car": one bad frame does not relabel it), its recent box
history, when it last moved, and the per-person state the posture logic keeps on it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamd.perception.geometry import Box
from streamd.perception.world import Posture

__all__ = ["Track", "TrackInput", "Tracker", "predicted_box"]

_HISTORY = 32  # (ts, box) kept per track: half a minute at 1 fps


@dataclass(frozen=True, slots=True)
class TrackInput:
    """One thing seen in a frame: a detection (with a label) or a moving blob (without)."""

    box: Box
    label: str | None = None
    score: float = 0.0
    moving: bool = False
    # A lying-shaped person box with no foreground under it is part of the scene as the
    # background holds it (a patterned mattress, a poster, someone lying there since the start):
    # it cannot be where a tracked person just fell (a fall leaves foreground where they land).
    in_background: bool = False


@dataclass
class Track:
    track_id: int
    box: Box
    first_seen: float
    last_seen: float
    last_moved: float
    anchor: tuple[float, float]  # centroid when it last moved
    votes: dict[str, float] = field(default_factory=dict)
    moving: bool = False  # moved in the latest sample it was seen in
    hits: int = 1
    history: deque[tuple[float, Box]] = field(default_factory=lambda: deque(maxlen=_HISTORY))
    detected_at: float = 0.0  # last time a detection (not a blob or body) matched it
    detected_box: Box | None = None  # the box of that detection
    detections: int = 0  # samples in which a detection matched it
    # Last time a detector box (a detection, or a weak candidate that kept a lost person) placed
    # it: then its box's top and height are the body's, not a foreground blob's.
    boxed_at: float = 0.0
    # People: posture and falls (kept by perception.posture)
    ref_height: float | None = None  # upright height near where the person is
    posture: Posture = Posture.UNKNOWN
    posture_since: float | None = None
    last_upright: float | None = None
    upright_top: float | None = None  # the box's top at the last upright sample
    fall_onset: float | None = None  # pending, not yet confirmed
    fall_seen: float | None = None  # when the pending fall was seen (confirmed a moment later)
    fallen_at: float | None = None
    down_height: float | None = None  # box height when the fall was confirmed
    lying_since: float | None = None  # survives a few seconds of other postures (flicker)
    last_lying: float | None = None
    zones: frozenset[str] = frozenset()
    out_of_view_at: float | None = None  # lost here, last seen leaving through an edge
    # The skeleton's answer (perception.pose) for `pose_box`, asked at `pose_at`: lying or not
    pose_lying: bool | None = None
    pose_box: Box | None = None
    pose_at: float | None = None

    @property
    def label(self) -> str | None:
        """The label with the highest summed score over the track's life, if any."""
        if not self.votes:
            return None
        return max(self.votes.items(), key=lambda kv: (kv[1], kv[0]))[0]

    @property
    def score(self) -> float:
        label = self.label
        return 0.0 if label is None or not self.hits else min(1.0, self.votes[label] / self.hits)

    def still_for(self, now: float) -> float:
        return max(0.0, now - self.last_moved)

    def velocity(self) -> tuple[float, float]:
        """Anchor velocity (px/s) over the last two positions."""
        if len(self.history) < 2:
            return (0.0, 0.0)
        (t0, b0), (t1, b1) = self.history[-2], self.history[-1]
        dt = t1 - t0
        if dt <= 0:
            return (0.0, 0.0)
        return ((b1.center[0] - b0.center[0]) / dt, (b1.y2 - b0.y2) / dt)

    def see(self, ts: float, box: Box) -> None:
        """Record a position without a detection (e.g. the body of a fallen person)."""
        self.box = box
        self.last_seen = ts
        self.history.append((ts, box))

    def take_over(self, other: Track) -> None:
        """Continue as `other`, a track born this sample that is this one (linked late)."""
        if self.history and self.history[-1][0] == other.last_seen:
            # What it matched this sample (its own ghost, a shadow) was not them: `other` is.
            self.history.pop()
        self.see(other.last_seen, other.box)
        for label, votes in other.votes.items():
            self.votes[label] = self.votes.get(label, 0.0) + votes
        self.hits += other.hits
        self.moving = self.moving or other.moving
        if other.detections:
            self.detected_at, self.detected_box = other.detected_at, other.detected_box
            self.boxed_at = other.boxed_at
            self.detections += other.detections


def _diag(box: Box) -> float:
    return math.hypot(box.width, box.height)


def _distance(a: Box, b: Box) -> float:
    (ax, ay), (bx, by) = a.center, b.center
    return math.hypot(ax - bx, ay - by)


def predicted_box(track: Track, ts: float, horizon_s: float = 2.0) -> Box:
    """The track's last box moved on at its last velocity (extrapolated no more than
    `horizon_s`)."""
    vx, vy = track.velocity()
    dt = min(max(ts - track.last_seen, 0.0), horizon_s)
    b = track.box
    return Box(b.x1 + vx * dt, b.y1 + vy * dt, b.x2 + vx * dt, b.y2 + vy * dt)


def _similar_size(a: Box, b: Box) -> bool:
    """Matching by distance alone needs boxes of about the same size: a far-away person near
    where a close one was is someone else. A fall halves a box's height but keeps its area (a
    tall box becomes a wide one), so the same area in another shape is the same size too."""
    ha, hb = max(a.height, 1.0), max(b.height, 1.0)
    if 0.5 <= ha / hb <= 2.0:
        return True
    area = max(a.width, 1.0) * ha / (max(b.width, 1.0) * hb)
    return 0.5 <= area <= 2.0  # the geometric mean of width and height within 1/sqrt(2)


def _down(track: Track) -> bool:
    return track.fallen_at is not None or track.posture is Posture.LYING


def _conflict(track: Track, item: TrackInput) -> bool:
    # A person and a thing are different objects even when they overlap (a person carrying a
    # bag, walking past a car); flicker between object labels is normal for one object. An
    # unnamed moving region is only a named track when it lies right on it: it is often
    # someone else's motion, or a lost person's shadow, and must not move the track there.
    label = track.label
    if label is None:
        return False
    if item.label is None:
        return True
    return (label == "person") != (item.label == "person")


@dataclass
class Tracker:
    """Greedy IoU matching, then centroid distance for what is left; not thread-safe."""

    iou_threshold: float = 0.2
    max_jump: float = 1.0  # centroid distance allowed, as a fraction of the larger diagonal
    max_age_s: float = 5.0  # a track unseen for longer is dropped
    move_fraction: float = 0.1  # centroid shift (of the diagonal) that counts as moving
    tracks: dict[int, Track] = field(default_factory=dict)
    next_id: int = 1
    _previous: float | None = None  # the last update's time

    def new_id(self) -> int:
        """Ids come from one counter for every kind of track (still objects too)."""
        tid = self.next_id
        self.next_id += 1
        return tid

    def expire(self, ts: float) -> list[Track]:
        """Drop and return the tracks unseen for longer than `max_age_s`."""
        gone = [tr for tr in self.tracks.values() if ts - tr.last_seen > self.max_age_s]
        for tr in gone:
            del self.tracks[tr.track_id]
        return gone

    def update(self, ts: float, items: Sequence[TrackInput]) -> list[Track]:
        """Match `items` to tracks (creating new ones); returns the track of each item."""
        assigned: list[Track | None] = [None] * len(items)
        free = dict(self.tracks)
        pairs = []
        for i, item in enumerate(items):
            for tr in free.values():
                if item.in_background and not _down(tr):
                    continue
                iou = tr.box.iou(item.box)
                if tr.last_seen == self._previous:
                    # Where a track seen a moment ago is heading counts as where it is (SORT's
                    # prediction): a walker's next box overlaps their stride ahead, not the
                    # box of a track that happens to lie across their path.
                    iou = max(iou, predicted_box(tr, ts).iou(item.box))
                conflict = _conflict(tr, item)
                if iou >= (0.6 if conflict else self.iou_threshold):
                    pairs.append((conflict, -iou, i, tr.track_id))
        # Like with like first: a person's track takes the person box on them before a chair
        # box that happens to overlap it more (someone seated), which would leave their own
        # detection to be taken by whoever is nearest.
        pairs.sort()
        for *_, i, tid in pairs:
            if assigned[i] is None and tid in free:
                assigned[i] = free.pop(tid)
        by_distance = []
        for i, item in enumerate(items):
            if assigned[i] is not None:
                continue
            for tr in free.values():
                if _conflict(tr, item) or not _similar_size(tr.detected_box or tr.box, item.box):
                    continue
                if item.in_background and not _down(tr):
                    continue
                if tr.label is None and item.label is not None and tr.last_seen != self._previous:
                    # An unnamed moving region that was not there a moment ago is gone (a
                    # flicker, a door, a shadow): a detection a body's length away from where
                    # it was is someone arriving or moving, not that region named at last.
                    continue
                if _down(tr) and tr.box.gap(item.box) > 0:
                    # Someone on the floor gets up where they lie; a detection elsewhere is
                    # someone else (a lying body's wide box would reach far by its diagonal).
                    continue
                dist = _distance(tr.box, item.box)
                if dist <= self.max_jump * max(_diag(tr.box), _diag(item.box)):
                    # Ranked by where the track was heading: of two tracks that could take a
                    # detection, a walker seen a second ago, a stride short of it, is likelier
                    # than a track lost seconds ago that happens to be nearer.
                    by_distance.append((_distance(predicted_box(tr, ts), item.box), i, tr.track_id))
        by_distance.sort()
        for _, i, tid in by_distance:
            if assigned[i] is None and tid in free:
                assigned[i] = free.pop(tid)

        self._previous = ts
        out: list[Track] = []
        for item, found in zip(items, assigned, strict=True):
            if found is None:
                tr = self._new(ts, item)
            else:
                tr = found
                self._advance(tr, ts, item)
            if item.label is not None:
                tr.votes[item.label] = tr.votes.get(item.label, 0.0) + max(item.score, 0.05)
                tr.detected_at = tr.boxed_at = ts
                tr.detected_box = item.box
                tr.detections += 1
            out.append(tr)
        return out

    def _new(self, ts: float, item: TrackInput) -> Track:
        tr = Track(
            track_id=self.new_id(),
            box=item.box,
            first_seen=ts,
            last_seen=ts,
            last_moved=ts,
            anchor=item.box.center,
            moving=item.moving,
        )
        tr.history.append((ts, item.box))
        self.tracks[tr.track_id] = tr
        return tr

    def _advance(self, tr: Track, ts: float, item: TrackInput) -> None:
        (cx, cy), (ax, ay) = item.box.center, tr.anchor
        shifted = math.hypot(cx - ax, cy - ay) > self.move_fraction * max(_diag(item.box), 1.0)
        tr.moving = item.moving or shifted
        if tr.moving:
            tr.last_moved = ts
            tr.anchor = (cx, cy)
        tr.hits += 1
        tr.see(ts, item.box)

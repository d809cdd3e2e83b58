"""A small IoU-then-centroid tracker for the objects encoder (1-5 samples per second).

Why not ByteTrack (supervision): it installs here, but pulls matplotlib, pillow and requests
into a daemon for a dozen lines of matching, and its Kalman motion model is tuned for 25-30
fps video, where boxes overlap from frame to frame. At the 1-2 fps the window samples, a car
moves more than its own length between samples, so after IoU matching this tracker also
matches by centroid distance relative to the box size.

Each track keeps a weighted vote of the labels the detector gave it (a top-down car flickers
between "cell phone", "bus" and "car"), when it last moved, and where.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamd.window.detection import Box

__all__ = ["Track", "TrackInput", "Tracker"]


@dataclass(frozen=True, slots=True)
class TrackInput:
    """One thing seen in a frame: a detection, a moving blob or a still region.

    `label` is None for class-agnostic regions; `moving` says the scene model saw it move in
    this sample; `still_since` is when a still region became still, where known.
    """

    box: Box
    label: str | None = None
    score: float = 0.0
    moving: bool = False
    still_since: float | None = None


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

    @property
    def label(self) -> str | None:
        """The label with the highest summed score over the track's life, if any."""
        if not self.votes:
            return None
        return max(self.votes.items(), key=lambda kv: (kv[1], kv[0]))[0]

    def still_for(self, now: float) -> float:
        return max(0.0, now - self.last_moved)


def _diag(box: Box) -> float:
    return math.hypot(box.width, box.height)


def _distance(a: Box, b: Box) -> float:
    (ax, ay), (bx, by) = a.center, b.center
    return math.hypot(ax - bx, ay - by)


def _never(track: Track, item: TrackInput) -> bool:
    # A still region where a person was is what they left (or their ghost in the background
    # model), never the person: it must not inherit the person's label.
    return item.still_since is not None and track.label == "person"


def _conflict(track: Track, item: TrackInput) -> bool:
    # A person and a thing are different objects even when they overlap (a person carrying a
    # bag, walking past a car); flicker between object labels is normal for one object.
    label = track.label
    if label is None or item.label is None:
        return False
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

    def update(self, ts: float, items: Sequence[TrackInput]) -> list[Track]:
        """Match `items` to tracks (creating new ones); returns the track of each item."""
        for tid in [t for t, tr in self.tracks.items() if ts - tr.last_seen > self.max_age_s]:
            del self.tracks[tid]
        assigned: list[Track | None] = [None] * len(items)
        free = dict(self.tracks)
        pairs = []
        for i, item in enumerate(items):
            for tr in free.values():
                if _never(tr, item):
                    continue
                iou = tr.box.iou(item.box)
                conflict = _conflict(tr, item)
                if iou >= (0.6 if conflict else self.iou_threshold):
                    pairs.append((-iou, i, tr.track_id))
        pairs.sort()
        for _, i, tid in pairs:
            if assigned[i] is None and tid in free:
                assigned[i] = free.pop(tid)
        pairs = []
        for i, item in enumerate(items):
            if assigned[i] is not None:
                continue
            for tr in free.values():
                if _never(tr, item) or _conflict(tr, item):
                    continue
                dist = _distance(tr.box, item.box)
                if dist <= self.max_jump * max(_diag(tr.box), _diag(item.box)):
                    pairs.append((dist, i, tr.track_id))
        pairs.sort()
        for _, i, tid in pairs:
            if assigned[i] is None and tid in free:
                assigned[i] = free.pop(tid)

        out: list[Track] = []
        for item, found in zip(items, assigned, strict=True):
            if found is None:
                tr = self._new(ts, item)
            else:
                tr = found
                self._advance(tr, ts, item)
            if item.label is not None:
                tr.votes[item.label] = tr.votes.get(item.label, 0.0) + max(item.score, 0.05)
            out.append(tr)
        return out

    def _new(self, ts: float, item: TrackInput) -> Track:
        still = ts if item.moving else (item.still_since if item.still_since is not None else ts)
        tr = Track(
            track_id=self.next_id,
            box=item.box,
            first_seen=ts,
            last_seen=ts,
            last_moved=min(still, ts),
            anchor=item.box.center,
            moving=item.moving,
        )
        self.tracks[tr.track_id] = tr
        self.next_id += 1
        return tr

    def _advance(self, tr: Track, ts: float, item: TrackInput) -> None:
        (cx, cy), (ax, ay) = item.box.center, tr.anchor
        shifted = math.hypot(cx - ax, cy - ay) > self.move_fraction * max(_diag(item.box), 1.0)
        # A still region's box shifts as the scene model grows it: it did not move.
        tr.moving = item.moving or (shifted and item.still_since is None)
        if tr.moving:
            tr.last_moved = ts
            tr.anchor = (cx, cy)
        elif item.still_since is not None:
            # The scene model knows when a still region settled better than we do: it keeps
            # the age of an object that people walk in front of.
            tr.last_moved = min(item.still_since, ts)
        tr.box = item.box
        tr.last_seen = ts

"""One camera's world model: sampled frame → `WorldState`.

Per sample: the background model measures change (cheap); the detector runs only when enough
of the frame changed (an unchanged frame costs no detector call and reuses the last
detections); the tracker gives detections and unexplained moving regions an identity; lost
people are followed through the foreground (a fallen person is rarely detected); posture,
falls, still objects with owners, zones and lines are advanced; the result is one immutable
WorldState with the scene events of this sample, each emitted once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from streamd.ingest.frame import Frame, Image
from streamd.perception.background import BackgroundModel, Foreground
from streamd.perception.continuity import (
    body_sized,
    near,
    out_sideways,
    part_of,
    walked_into,
    walked_out,
)
from streamd.perception.geometry import Box, Detection, Detector
from streamd.perception.lying_spots import LyingSpots
from streamd.perception.objects import StillObjects
from streamd.perception.pose import PoseEstimator, ask_pose
from streamd.perception.posture import (
    PostureParams,
    follow_body,
    pick_candidate,
    update_posture,
)
from streamd.perception.startup import StartupSpots
from streamd.perception.states import object_state, track_state
from streamd.perception.tracker import Track, Tracker, TrackInput
from streamd.perception.world import (
    EventKind,
    Posture,
    SceneEvent,
    WorldState,
)
from streamd.perception.zones import ZoneSet, zone_events

__all__ = ["Perception", "PerceptionStats"]


@dataclass
class PerceptionStats:
    frames: int = 0
    analysed: int = 0
    gated: int = 0
    detect_s: float = 0.0
    world_s: float = 0.0
    pose_calls: int = 0  # boxes the pose model was asked about


@dataclass(frozen=True)
class _Params:
    min_blob_area: float = 0.004  # of the frame: smaller moving regions are limbs and noise
    max_blob_area: float = 0.5  # larger: a lighting change or a camera shake, not an object
    explained: float = 0.3  # a blob this much covered by a detection is that detection
    moving_overlap: float = 0.25  # a detection this much covered by motion is moving
    removed_person_s: float = 30.0  # a ghost where a person stood this recently is theirs
    warmup_s: float = 3.0  # no appeared / entered events for what is there at start
    background_fg: float = 0.15  # a lying box with less foreground is part of the background
    relink: float = 1.5  # diagonals: a newcomer this near a just-lost person is them
    same_body: float = 0.5  # of the smaller box inside the other: two lying tracks, one body


@dataclass
class Perception:
    """Turns one camera's sampled frames into WorldStates. `observe` is blocking (numpy,
    OpenCV, the detector): call it from a worker thread, one frame at a time."""

    detector: Detector | None
    diff_threshold: float = 0.004
    zones: ZoneSet = field(default_factory=ZoneSet)
    posture: PostureParams = field(default_factory=PostureParams)
    pose: PoseEstimator | None = None  # optional (perception/pose.py): postures boxes leave open
    background: BackgroundModel = field(default_factory=BackgroundModel)
    tracker: Tracker = field(default_factory=Tracker)
    stats: PerceptionStats = field(default_factory=PerceptionStats)
    params: _Params = field(default_factory=_Params)
    _objects: StillObjects | None = None
    _last: tuple[Detection, ...] = ()
    _have_last: bool = False
    _started: float | None = None
    _person_spots: list[tuple[float, Box]] = field(default_factory=list)
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=2))  # sample times
    _startup: StartupSpots = field(default_factory=StartupSpots)
    _lying: LyingSpots | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._objects = StillObjects(self.tracker.new_id)
        self._lying = LyingSpots(self.posture.lying_aspect)

    def observe(self, frame: Frame) -> WorldState:
        with self._lock:
            return self._observe(frame)

    def _observe(self, frame: Frame) -> WorldState:
        ts = frame.received_at
        if self._started is None:
            self._started = ts
        self.stats.frames += 1
        t0 = time.perf_counter()
        prep = self.background.prepare(frame.image)
        gated = self._have_last and prep.changed < self.diff_threshold
        detections = self._last
        if self.detector is not None and not gated:
            detections = tuple(self.detector.detect(frame.image))
        t1 = time.perf_counter()
        fg = self.background.update(prep, ts)
        self._last, self._have_last = detections, True
        if gated:
            self.stats.gated += 1
        else:
            self.stats.analysed += 1
        world = self._world(frame, fg, detections, not gated)
        self.stats.detect_s += t1 - t0
        self.stats.world_s += time.perf_counter() - t1
        return world

    def _world(
        self, frame: Frame, fg: Foreground, detections: tuple[Detection, ...], analysed: bool
    ) -> WorldState:
        ts = frame.received_at
        assert self._objects is not None
        assert self._started is not None
        events: list[SceneEvent] = []
        # Weak detections only ever keep a person already tracked (below); everything else
        # sees the detector's confident boxes alone.
        candidates = [d for d in detections if d.weak and d.label == "person" and analysed]
        detections = tuple(d for d in detections if not d.weak)
        if analysed:
            lying = self._lying_spots(frame, fg, candidates, detections)
            candidates = [d for d in candidates if d not in lying]
            detections += tuple(replace(d, weak=False) for d in lying)
        items = self._inputs(frame, fg, detections)
        # Stale tracks go first: someone else arriving later must not take their identity.
        for tr in self.tracker.expire(ts):
            events.append(SceneEvent(EventKind.LEFT, ts, tr.track_id, tr.label, tr.box))
        before = {tid: tr.box for tid, tr in self.tracker.tracks.items()}
        seen = self.tracker.update(ts, items)
        seen_ids = {tr.track_id for tr in seen}
        warm = ts - self._started >= self.params.warmup_s
        for tr in seen:
            if tr.hits == 2 and warm:
                events.append(SceneEvent(EventKind.APPEARED, ts, tr.track_id, tr.label, tr.box))
        people = [tr for tr in self.tracker.tracks.values() if tr.label == "person"]
        detected = [tr.box for tr in people if tr.detected_at == ts]
        gone_before = self._recent[0] if len(self._recent) == self._recent.maxlen else None
        previous = self._recent[-1] if self._recent else None
        self._recent.append(ts)
        # People first seen now: a track lost at the same moment near one of them is most
        # likely that person, moved further than the tracker would link (at 1 fps, a brisk
        # walk across a near camera's view), not someone on the floor to follow.
        newcomers = [tr for tr in seen if tr.label == "person" and tr.hits == 1]
        for tr in people:
            if (
                tr.track_id in seen_ids
                and tr.detected_at != ts
                and tr.fallen_at is None
                and (nc := self._newcomer_near(tr, newcomers)) is not None
                and not self._head_dropped(tr, nc.box)
            ):
                # Matched only by an unnamed moving region where they stood (their own ghost in
                # the background, their shadow) while a person turned up a stride away, head
                # as high: that person is them, walked on. (One whose head is far lower may be
                # them going down: that is judged on their track as it goes, below.)
                self._continue_as(tr, nc, newcomers)
            elif tr.track_id not in seen_ids:
                down = tr.fallen_at is not None or tr.fall_onset is not None
                # Someone the detector boxed lying, in a frame unchanged since, is still there
                # however long ago that was (it is off while nothing changes). Not a followed
                # foreground blob: that is no box of a body.
                lying_still = (
                    not analysed and tr.posture is Posture.LYING and tr.box == tr.detected_box
                )
                if not (down or lying_still) and ts - tr.detected_at > self.posture.body_follow_s:
                    continue  # a standing person the detector lost for long is simply gone
                if tr.fallen_at is None and gone_before is not None and tr.last_seen < gone_before:
                    # Nowhere in the last two samples: gone. Foreground turning up there later
                    # is someone or something else (a bag they left, tipping over).
                    continue
                nc = self._newcomer_near(tr, newcomers)
                if not analysed and tr.last_seen == previous:
                    # Nothing changed since the last sample (the gate kept the detector off):
                    # whoever was there still is, as they were. Nobody falls in a frame that
                    # is the same as the one before.
                    tr.see(ts, tr.box)
                elif tr.fallen_at is None and nc is not None:
                    # Theirs is the one transition to judge: walked on, or went down.
                    self._continue_as(tr, nc, newcomers)
                elif (
                    tr.fallen_at is None
                    and tr.last_seen == previous
                    and walked_into(tr, ts, detected, self.tracker.iou_threshold)
                ):
                    # Someone is detected now where this walker was heading, and not where
                    # they were: them, walked on (the tracker gave their box to a track lost
                    # there earlier). What moved behind them is no body on the floor.
                    tr.fall_onset = tr.fall_seen = None
                    continue
                elif (
                    weak := pick_candidate(tr, candidates, fg, self.posture, detected)
                ) is not None and not self._startup.holds(weak.box):
                    candidates.remove(weak)
                    tr.see(ts, weak.box)
                    tr.boxed_at = ts
                elif out_sideways(tr, frame.image.shape[1], self.posture.top_edge_px, candidates):
                    continue
                else:
                    body = follow_body(tr, fg, self.posture, detected)
                    if body is not None and self._startup.holds(body):
                        body = None
                    if body is None:
                        if tr.fallen_at is None:
                            # Seen going down, then nowhere: someone who fell is still there
                            # (as foreground at least), so they walked or ducked out of view.
                            tr.fall_onset = tr.fall_seen = None
                        continue
                    tr.see(ts, body)
            elif tr.track_id not in self.tracker.tracks:
                continue  # a newcomer another track took over
            if self.pose is not None and analysed:
                self.stats.pose_calls += ask_pose(self.pose, tr, frame.image, ts, self.posture)
            events.extend(update_posture(tr, ts, self.posture))
            if not tr.moving:
                self._person_spots.append((ts, tr.box))
        self._merge_lying_doubles(ts)
        h, w = frame.image.shape[:2]
        for tr in people:
            if tr.last_seen == ts:
                tr.out_of_view_at = None
            elif tr.out_of_view_at is None and walked_out(tr, w, h, self.posture.top_edge_px):
                tr.out_of_view_at = ts
        # Who can own or attend an object: people, and solid upright moving regions bigger than
        # a bag that the detector did not name (it misses people at odd angles and sizes).
        owners = people + [
            tr
            for tr in self.tracker.tracks.values()
            if tr.label is None and tr.box.height > tr.box.width and tr.hits >= 2
        ]
        # A still object is named only by fresh detections: an unchanged frame reuses the last
        # ones, which must not count again.
        fresh = detections if analysed else ()
        if warm:
            still = self._startup.without_ghosts(fg, detections, self.background)
        else:
            self._startup.learn(detections)
            still = fg
        objects, obj_events = self._objects.update(ts, still, owners, fresh)
        events.extend(obj_events)
        events.extend(self._removed(fg, ts))
        live = list(self.tracker.tracks.values())
        events.extend(zone_events(self.zones, live, ts, (w, h), before, warm))
        tracks = [track_state(tr, frame, ts, analysed) for tr in live]
        tracks += [object_state(o) for o in objects]
        return WorldState(
            frame=frame,
            analysed=analysed,
            tracks=tuple(tracks),
            events=tuple(sorted(events, key=lambda e: e.ts)),
            motion=fg.motion,
            changed=fg.changed,
            brightness=fg.brightness,
            moving_boxes=tuple(b for b, _ in fg.moving_boxes),
        )

    def _inputs(
        self, frame: Frame, fg: Foreground, detections: tuple[Detection, ...]
    ) -> list[TrackInput]:
        p = self.params
        h, w = frame.image.shape[:2]
        frame_area = float(h * w)
        items: list[TrackInput] = []
        for d in detections:
            moving = fg.overlap(fg.moving, d.box) >= p.moving_overlap
            in_background = (
                d.label == "person"
                and d.box.width >= self.posture.lying_aspect * d.box.height
                and fg.overlap(fg.fg, d.box) < p.background_fg
            )
            items.append(TrackInput(d.box, d.label, d.score, moving, in_background))
        for b, _ in fg.moving_boxes:
            if not p.min_blob_area <= b.area / frame_area <= p.max_blob_area:
                continue
            if any(
                b.intersection(d.box) >= p.explained * min(b.area, d.box.area) for d in detections
            ):
                continue
            items.append(TrackInput(b, None, 0.0, True))
        return items

    def _continue_as(self, tr: Track, nc: Track, newcomers: list[Track]) -> None:
        """`nc`, a person first seen now, is `tr` linked late: one track goes on."""
        newcomers.remove(nc)
        del self.tracker.tracks[nc.track_id]
        tr.take_over(nc)

    def _newcomer_near(self, tr: Track, newcomers: Sequence[Track]) -> Track | None:
        """Of the people first seen now, the nearest one a stride from where `tr` was last
        detected and about their size: most likely them, moved further than the tracker
        links (at 1 fps, a brisk walk across a near camera's view)."""
        was = tr.detected_box or tr.box
        close = [
            nc
            for nc in newcomers
            if near(was, nc.box, self.params.relink) and body_sized(was, nc.box)
        ]
        return min(close, key=lambda n: tr.box.distance(n.box)) if close else None

    def _head_dropped(self, tr: Track, box: Box) -> bool:
        """Is the top of `box` lower than `tr`'s last upright top by a fall's drop?"""
        if tr.upright_top is None or tr.ref_height is None:
            return False
        return box.y1 - tr.upright_top >= self.posture.fall_drop * tr.ref_height

    def _lying_spots(
        self,
        frame: Frame,
        fg: Foreground,
        candidates: Sequence[Detection],
        detections: Sequence[Detection],
    ) -> list[Detection]:
        """Weak person boxes that are someone lying there since before anyone saw them stand
        (perception/lying_spots.py), to count as detections."""
        assert self._lying is not None
        tracks = [tr for tr in self.tracker.tracks.values() if tr.label == "person"]
        # Not a piece of someone boxed confidently now, nor where someone seen standing or
        # falling is (their own weak box is theirs to keep: `pick_candidate`).
        people = [d.box for d in detections if d.label == "person"] + [
            tr.box
            for tr in tracks
            if (tr.last_upright, tr.fallen_at, tr.fall_onset) != (None, None, None)
        ]
        lying = [
            tr.detected_box
            for tr in tracks
            if tr.posture is Posture.LYING and tr.detected_box is not None
        ]
        skeleton = None if self.pose is None else partial(self._skeleton, frame.image)
        return self._lying.update(frame.received_at, fg, candidates, people, lying, skeleton)

    def _skeleton(self, image: Image, box: Box) -> bool | None:
        assert self.pose is not None
        self.stats.pose_calls += 1
        return self.pose.lying(image, box)

    def _merge_lying_doubles(self, ts: float) -> None:
        """One person on the floor, two person tracks: the detector often boxes a lying body
        twice (whole and in part, overlapping less than its suppression threshold), or the
        followed body and a fresh detection of it coexist. Overlapping lying tracks are one
        person: the one who fell or is falling (else the older) keeps the earliest lying onset,
        the other goes, so a lying or fall rule alerts once. Only lying ones: people standing
        together overlap all the time."""
        lying = sorted(
            (
                tr
                for tr in self.tracker.tracks.values()
                if tr.label == "person" and tr.last_seen == ts and tr.posture is Posture.LYING
            ),
            key=lambda tr: (
                tr.fallen_at is None,
                tr.fall_onset is None,
                tr.first_seen,
                tr.track_id,
            ),
        )
        merged: set[int] = set()
        for i, keep in enumerate(lying):
            if keep.track_id in merged:
                continue
            for other in lying[i + 1 :]:
                if other.track_id in merged:
                    continue
                small = min(keep.box.area, other.box.area)
                overlap = keep.box.intersection(other.box) >= self.params.same_body * small
                if not overlap and not part_of(keep, other):
                    continue
                merged.add(other.track_id)
                if other.lying_since is not None:
                    keep.lying_since = min(keep.lying_since or other.lying_since, other.lying_since)
                del self.tracker.tracks[other.track_id]

    def _removed(self, fg: Foreground, ts: float) -> list[SceneEvent]:
        """Ghost regions are removed objects, unless a person stood there (their own ghost)."""
        horizon = ts - self.params.removed_person_s
        self._person_spots = [(t, b) for t, b in self._person_spots if t >= horizon]
        out = []
        for region in fg.removed:
            if any(b.iou(region.box) > 0.1 for _, b in self._person_spots):
                continue
            out.append(SceneEvent(EventKind.REMOVED, region.since, None, None, region.box))
        return out

"""Posture (upright / low / lying) and falls, from a person track's box over time.

The offline detector sees a person standing and mid-fall (a wide, low box) but rarely once they
lie on the floor: the box simply vanishes. So a person's *body* is followed through the
background model when the detector loses them (the foreground where they were), and a fall is
a change of shape over time, not a single "lying" detection:

- posture compares the box with the person's own upright height near there (`ref_height`,
  learnt while their box is clearly upright) and with its own width;
- a fall is upright → lying within `fall_window_s` (the top of the box dropping by a good part
  of the body height), confirmed when the person is still not upright `confirm_s` later;
  bending to pick something up recovers within that time, and lying down on purpose passes
  through a longer "low" phase (kneeling, sitting) — it is lying, not a fall;
- getting up (upright again) ends a fall and a lying spell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamd.perception.background import Foreground
from streamd.perception.geometry import Box, Detection
from streamd.perception.tracker import Track
from streamd.perception.world import EventKind, Posture, SceneEvent

__all__ = ["PostureParams", "classify", "follow_body", "pick_candidate", "update_posture"]


@dataclass(frozen=True)
class PostureParams:
    upright_aspect: float = 0.75  # width / height at most, for upright
    upright_height: float = 0.75  # of the reference height at least, for upright
    lying_aspect: float = 1.3  # width / height at least: lying whatever the height
    lying_height: float = 0.5  # of the reference height at most (with a squat box): lying
    fall_window_s: float = 3.0  # upright → lying within this is a fall
    fall_drop: float = 0.3  # the box's top must drop by this part of the reference height
    plunge_drop: float = 0.6  # a squat box whose top dropped this much is falling too
    confirm_s: float = 0.9
    min_detections: int = 2  # a person seen once (a spurious box) cannot fall
    # A person this small (pixels of upright height) is followed but not judged for falls: at
    # that size, other people's motion nearby is as big as their whole body.
    min_fall_height_px: float = 80.0
    body_search: float = 0.6  # widen the last box by this part of its width on each side
    body_min_fill: float = 0.04  # foreground needed in the search area to follow a body
    top_edge_px: float = 2.0  # a box whose top is this close to the frame's top is cut by it
    lying_gap_s: float = 2.5  # other postures this long end a lying spell
    # A person who is not down is followed through the foreground only this long after their
    # last detection (a missed frame or two); someone who fell, for as long as they are there.
    body_follow_s: float = 3.0
    # A weak detection (a candidate) keeps a lost person only if this much of it is foreground
    # (a body that just went down is new to the background; furniture is not).
    candidate_fg: float = 0.15


def classify(box: Box, ref_height: float | None, p: PostureParams) -> Posture:
    h = max(box.height, 1.0)
    aspect = box.width / h
    ratio = None if ref_height is None else h / max(ref_height, 1.0)
    if box.y1 <= p.top_edge_px and aspect > p.upright_aspect:
        # Cut by the top of the frame (an arm reaching in, someone right under the camera):
        # only part of the body shows, and a wide part is not a body lying on the floor.
        return Posture.LOW
    if aspect >= p.lying_aspect or (
        ratio is not None and ratio <= p.lying_height and aspect >= 0.8
    ):
        return Posture.LYING
    if aspect <= p.upright_aspect and (ratio is None or ratio >= p.upright_height):
        return Posture.UPRIGHT
    return Posture.LOW


def follow_body(
    track: Track, fg: Foreground, p: PostureParams, others: Sequence[Box] = ()
) -> Box | None:
    """Where a person the detector lost is, from the foreground around their last box.

    `others` are the people detected in this frame: foreground that is mostly one of them is
    that person (the tracker may have given them another id), not this one's body."""
    b = track.detected_box or track.box
    # Around where the legs were: a body on the floor lies near the level the feet stood on
    # (a little below when falling towards the camera), and the head's old place is often
    # the person's own ghost in the background.
    area = _around(b, p, top=0.5, below=0.25)
    body = fg.blob_in(area, p.body_min_fill)
    if body is None or body.area < 0.15 * b.area or body.area > 4.0 * b.area:
        return None
    if not _over_feet(body, b):
        return None
    if any(body.covered_by(o) > 0.3 for o in others):
        return None
    return body


def pick_candidate(
    track: Track,
    candidates: Sequence[Detection],
    fg: Foreground,
    p: PostureParams,
    others: Sequence[Box] = (),
) -> Detection | None:
    """The weak detection that is this lost person, if any: the detector's own box of a body
    it scores low (on the floor, foreshortened, half on a mattress) is a better box than the
    foreground blob `follow_body` finds, whose top is only where the search began.

    Same place rules as a followed body: where they stood or below (a fall towards the camera
    lands lower in the image), still covering the feet's place, about their size, not someone
    else, and new to the background. Of several, the one the detector scores highest."""
    b = track.detected_box or track.box
    area = _around(b, p, top=0.3, below=1.0)
    best: Detection | None = None
    for d in candidates:
        c = d.box
        if not 0.3 * b.area <= c.area <= 4.0 * b.area:
            continue
        if c.covered_by(area) < 0.6 or not _over_feet(c, b):
            continue
        if any(c.covered_by(o) > 0.3 or o.covered_by(c) > 0.5 for o in others):
            continue
        if fg.overlap(fg.fg, c) >= p.candidate_fg and (best is None or d.score > best.score):
            best = d
    return best


def _around(b: Box, p: PostureParams, top: float, below: float) -> Box:
    """Where to look for the body of someone last boxed at `b`: sideways by about their
    standing height (a person lying down spans that), from `top` of their height down to
    `below` of it under their feet."""
    pad = max(p.body_search * b.width, 0.5 * b.height)
    return Box(b.x1 - pad, b.y1 + top * b.height, b.x2 + pad, b.y2 + below * b.height)


def _over_feet(body: Box, b: Box) -> bool:
    """Whoever falls, falls from where they stood: the body still covers the feet's place."""
    feet = (b.x1 + b.x2) / 2
    margin = 0.25 * b.width
    return body.x1 - margin <= feet <= body.x2 + margin


def update_posture(track: Track, ts: float, p: PostureParams) -> list[SceneEvent]:
    """Advance one person track's posture, fall state and lying spell with its current box."""
    events = _posture_and_fall(track, ts, p)
    down = track.fallen_at is not None or track.fall_onset is not None
    if track.posture is Posture.LYING and (down or not _walking(track, ts)):
        track.last_lying = ts
        if track.lying_since is None:
            track.lying_since = ts
    elif track.last_lying is not None and ts - track.last_lying > p.lying_gap_s:
        track.lying_since = None
    return events


def _posture_and_fall(track: Track, ts: float, p: PostureParams) -> list[SceneEvent]:
    box = track.box
    shape_upright = box.height >= box.width / p.upright_aspect * 1.1
    # Cut by the top of the frame, a box's height and top say nothing of where the head is.
    top_cut = box.y1 <= p.top_edge_px
    if shape_upright and track.detected_at == ts and not top_cut:
        # Learn the upright height only from clearly upright, detected boxes, and let it shrink
        # slowly: someone walking away gets smaller, someone starting to fall only looks it.
        ref = track.ref_height
        track.ref_height = (
            box.height if ref is None or box.height >= ref else (0.7 * ref + 0.3 * box.height)
        )
    detected = track.boxed_at == ts
    # A followed body's box starts at the search area's top (mid-body), so its height says
    # nothing about posture: only its shape does (a body on the floor is wide).
    posture = classify(box, track.ref_height if detected else None, p)
    if posture is Posture.LOW and _skeleton_lies(track, box):
        # Squat box, lying skeleton: someone lying along the camera's axis, not seated. (The
        # answer holds while the box stays where it was asked: through unchanged frames the
        # detector does not run.)
        posture = Posture.LYING
    down = track.fallen_at is not None or track.fall_onset is not None
    if (
        posture is Posture.UPRIGHT
        and down
        and track.upright_top is not None
        and track.ref_height is not None
        and box.y1 - track.upright_top >= p.fall_drop * track.ref_height
    ):
        # Upright-shaped but still well below where their head was: sitting on the floor after
        # the fall (seen from in front), not standing up again.
        posture = Posture.LOW
    if (
        posture is Posture.LOW
        and track.fallen_at is not None
        and track.down_height is not None
        and box.height <= 1.25 * track.down_height
    ):
        # Still as low as when they fell (seen end-on, a lying body is not wide): lying.
        posture = Posture.LYING
    events: list[SceneEvent] = []
    if posture is not track.posture:
        track.posture = posture
        track.posture_since = ts
    if posture is Posture.UPRIGHT:
        if track.fallen_at is not None:
            events.append(SceneEvent(EventKind.GOT_UP, ts, track.track_id, "person", box))
            track.fallen_at = None
        track.fall_onset = None
        track.last_upright = ts
        # No fall is measured from a top that is the frame's edge: the box "dropping" from
        # there is someone walking in under the camera, not a head coming down.
        track.upright_top = None if top_cut else box.y1
        return events
    if track.fallen_at is not None:
        return events
    drop = (
        0.0
        if track.upright_top is None or track.ref_height is None
        else (box.y1 - track.upright_top) / track.ref_height
    )
    fall_shaped = posture is Posture.LYING or (
        # Falling towards the camera the box stays tall in pixels but its top plunges.
        detected and box.width >= 0.8 * box.height and drop >= p.plunge_drop
    )
    if (
        track.fall_onset is None
        and fall_shaped
        and track.last_upright is not None
        and track.detections >= p.min_detections
        and track.ref_height is not None
        and track.ref_height >= p.min_fall_height_px
        and ts - track.last_upright <= p.fall_window_s
        and drop >= p.fall_drop
    ):
        # The fall began between the last upright sample and the next one: take the middle.
        track.fall_onset = (track.last_upright + _first_after(track, track.last_upright)) / 2
        track.fall_seen = ts
    if (
        track.fall_onset is not None
        and track.fall_seen is not None
        and ts - track.fall_seen >= p.confirm_s
    ):
        track.fallen_at = track.fall_onset
        track.down_height = box.height
        track.fall_onset = None
        # Still not upright after falling: on the floor since the fall was first seen, however
        # the body looks from here (lying along the camera's axis, a body is not wide).
        if track.posture is not Posture.LYING:
            track.posture, track.posture_since = Posture.LYING, track.fall_seen
        if track.lying_since is None:
            track.lying_since = track.fall_seen
        events.append(
            SceneEvent(
                EventKind.FELL,
                track.fallen_at,
                track.track_id,
                "person",
                box,
                details={"confirmed_at": round(ts, 3)},
            )
        )
    return events


def _skeleton_lies(track: Track, box: Box) -> bool:
    return bool(track.pose_lying) and track.pose_box is not None and track.pose_box.iou(box) >= 0.7


def _walking(track: Track, ts: float) -> bool:
    """A body box (no detection) that moved since the last sample is someone walking whom the
    detector missed, not someone lying."""
    if track.detected_at == ts or len(track.history) < 2:
        return False
    (_, before), (_, now) = track.history[-2], track.history[-1]
    (bx, by), (nx, ny) = before.center, now.center
    return abs(nx - bx) + abs(ny - by) > 0.25 * max(now.width, now.height)


def _first_after(track: Track, t: float) -> float:
    for ts, _ in track.history:
        if ts > t:
            return ts
    return track.last_seen

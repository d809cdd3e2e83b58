"""Who is who when the detector loses someone: the same body a moment later, a piece of a
body boxed apart, someone walking out of the frame. Pure geometry over tracks, used by the
world model (perception/model.py) for people it did not see this sample."""

from __future__ import annotations

from collections.abc import Sequence

from streamd.perception.geometry import Box, Detection
from streamd.perception.tracker import Track, predicted_box

__all__ = ["body_sized", "near", "out_sideways", "part_of", "walked_into", "walked_out"]


def near(a: Box, b: Box, diagonals: float) -> bool:
    return a.distance(b) <= diagonals * max(a.diagonal, b.diagonal)


def _heading_out(
    box: Box, step: tuple[float, float], width: int, height: int, edge: float, ends: bool
) -> bool:
    """Is `box` cut by a side of the frame that the last `step` (dx, dy) moved towards? With
    `ends`, the top and bottom count too (someone walking at the camera leaves at the bottom)."""
    dx, dy = step
    if (box.x1 <= edge and dx < 0) or (box.x2 >= width - edge and dx > 0):
        return True
    return ends and ((box.y2 >= height - edge and dy > 0) or (box.y1 <= edge and dy < 0))


def _last_step(track: Track) -> tuple[Box, tuple[float, float]] | None:
    """The track's last detected box and its last step (centre shift), when the last
    placement was a detector box (a shift of the foreground it followed is no direction)."""
    b = track.detected_box
    if b is None or len(track.history) < 2 or track.boxed_at != track.last_seen:
        return None
    (_, before), (_, last) = track.history[-2], track.history[-1]
    return b, (last.center[0] - before.center[0], last.center[1] - before.center[1])


def out_sideways(track: Track, width: int, edge_px: float, candidates: Sequence[Detection]) -> bool:
    """Not detected now, moving towards a side of the frame, and last detected cut by it, or
    only weakly seen now cut by it nearby: they are walking out of view. Their legs and the
    ghost of where they stood are no body to follow (a weak box where they went down still
    keeps someone who fell there)."""
    last = _last_step(track)
    if last is None:
        return False
    b, step = last
    boxes = [b, *(c.box for c in candidates if near(b, c.box, 1.5))]
    return any(_heading_out(x, step, width, 0, edge_px, ends=False) for x in boxes)


def walked_out(track: Track, width: int, height: int, edge_px: float) -> bool:
    """Last detected cut by any edge of the frame they were moving towards, and not seen now:
    out of view (an owner gone through the bottom edge is not still by their bag)."""
    last = _last_step(track)
    return last is not None and _heading_out(*last, width, height, edge_px, ends=True)


def walked_into(track: Track, ts: float, people: Sequence[Box], overlap: float) -> bool:
    """Is one of `people` (detected now) where `track` was heading at its last velocity, and
    not where it was? Then it is `track` walked on (someone standing still heads nowhere, so
    a person beside them is never taken for them)."""
    ahead = predicted_box(track, ts)
    return any(ahead.iou(b) >= overlap > track.box.iou(b) for b in people)


def body_sized(was: Box, now: Box) -> bool:
    """Could `now` be the body `was` boxed a moment later? Walking or falling, a body keeps
    roughly its area (a fall trades height for width); someone far smaller or larger nearby is
    someone else (further away behind them, or right under the camera)."""
    return 0.25 * was.area <= now.area <= 4.0 * was.area


def part_of(fallen: Track, other: Track) -> bool:
    """Is `other` a part of `fallen`'s body, boxed apart? A body on the floor is often boxed
    in pieces (head and legs either side of a torso cut by the frame's edge). Someone first
    seen already lying, after a person went down, within one body length (their upright
    height) of them, is them: a second person would have been seen upright first."""
    down = fallen.fallen_at if fallen.fallen_at is not None else fallen.fall_onset
    return (
        down is not None
        and fallen.ref_height is not None
        and other.last_upright is None
        and other.fallen_at is None
        and other.first_seen >= down
        and fallen.box.distance(other.box) <= fallen.ref_height
    )

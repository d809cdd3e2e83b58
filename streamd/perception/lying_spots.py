"""Someone lying since before the camera saw them stand: weak person boxes that stay put.

A body lying on the floor is what a people detector scores lowest (few such views in what it
learnt from), and someone already lying when the camera first sees them was never seen
standing, so no fall or shape change vouches for them. What does: the weak box stays at one
place sample after sample (a flicker does not), and something in it moves now and then (an
arm, a shift of the body: furniture the detector half takes for a person never does), or the
detector has boxed someone lying right there (then it is them, lying still, sunk into the
background as a still body does, who keeps their track instead of a new one starting each
time it lapses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streamd.perception.background import Foreground
from streamd.perception.geometry import Box, Detection
from streamd.perception.pose import DEFAULT_PARAMS as POSE

__all__ = ["LyingSpots", "SpotParams"]


@dataclass(frozen=True)
class SpotParams:
    iou: float = 0.5  # a weak box this much on a spot is that spot again
    samples: int = 3  # analysed samples it must have been found in
    span_s: float = 2.0  # over at least this long
    misses: int = 2  # analysed samples in a row without it: gone
    motion: float = 0.05  # moving foreground in it, at least once: a body, not furniture
    apart: float = 0.3  # of the smaller box inside someone's box: a piece of them
    pose_every_s: float = 2.0  # a squat spot's skeleton is asked at most this often
    pose_min_px: float = POSE.min_side_px  # the pose model's floor: smaller are not asked


@dataclass
class _Spot:
    """Where the detector keeps finding a weak, lying-shaped person box that no track took."""

    box: Box
    first: float
    last: float
    samples: int = 1
    misses: int = 0
    moved: bool = False
    skeleton: bool | None = None  # the pose's last answer for a squat spot: lying or not
    asked_at: float | None = None
    lay: int = 0  # how often the pose said lying

    def steady(self, p: SpotParams) -> bool:
        """Found often enough, over long enough, to be no flicker."""
        return self.samples >= p.samples and self.last - self.first >= p.span_s


@dataclass
class LyingSpots:
    """The weak spots of one camera, advanced once per analysed sample."""

    lying_aspect: float  # width / height from which a box lies across the view
    params: SpotParams = field(default_factory=SpotParams)
    _spots: list[_Spot] = field(default_factory=list)

    def update(
        self,
        ts: float,
        fg: Foreground,
        candidates: Sequence[Detection],
        people: Sequence[Box],
        lying: Sequence[Box],
        skeleton: Callable[[Box], bool | None] | None = None,
    ) -> list[Detection]:
        """Advance the spots with this sample's weak person boxes (`candidates`); those on a
        steady spot that is a body are returned, to count as detections. `people`: boxes of
        someone boxed confidently now or seen standing or falling (a weak box on them is a
        piece of them, or theirs to keep); `lying`: detector boxes of people tracked lying.
        Only boxes lying across the view count (a squat weak box is as likely a chair), and
        with `skeleton` (a pose estimator's "is the person in this box lying?") squat boxes
        whose skeleton lies: someone lying with their head towards the camera. For those the
        skeleton, found lying twice, is the body's evidence as well, as it is for a lying-
        shaped box in which nothing moved."""
        p = self.params
        found: list[Detection] = []
        matched: set[int] = set()
        for d in candidates:
            b = d.box
            squat = b.width < self.lying_aspect * max(b.height, 1.0)
            if squat and (skeleton is None or min(b.width, b.height) < p.pose_min_px):
                continue
            if any(b.intersection(o) > p.apart * min(b.area, o.area) for o in people):
                continue
            spot = max(self._spots, key=lambda s: s.box.iou(b), default=None)
            if spot is None or spot.box.iou(b) < p.iou or id(spot) in matched:
                spot = _Spot(b, ts, ts)
                self._spots.append(spot)
            else:
                spot.box, spot.last, spot.samples, spot.misses = b, ts, spot.samples + 1, 0
            matched.add(id(spot))
            spot.moved = spot.moved or fg.overlap(fg.moving, b) >= p.motion
            boxed_lying = any(b.iou(o) >= p.iou for o in lying)
            # The skeleton is asked about a squat spot from the first (without it, a squat box
            # does not count), and about a lying-shaped one once it is steady with nothing
            # else showing it is a body (someone who has not moved since the camera started).
            ask = squat or (spot.steady(p) and not (spot.moved or boxed_lying) and spot.lay < 2)
            due = spot.asked_at is None or ts - spot.asked_at >= p.pose_every_s
            if skeleton is not None and ask and due:
                spot.skeleton, spot.asked_at = skeleton(b), ts
                spot.lay += spot.skeleton is True
            if squat and spot.skeleton is not True:
                continue
            if spot.steady(p) and (spot.moved or boxed_lying or spot.lay >= 2):
                found.append(d)
        for spot in self._spots:
            if id(spot) not in matched:
                spot.misses += 1
        self._spots = [s for s in self._spots if s.misses < p.misses]
        return found

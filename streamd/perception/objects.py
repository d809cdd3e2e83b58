"""Still objects and their owners: what was placed, by whom, and whether it is attended.

Left objects as PETS 2006 / AVSS 2007 define them: an object is unattended once its owner —
the person it arrived with — is more than about two object widths away (a rule may ask for
another distance; the state here uses `proximity_widths`). A returning owner re-attends it, and
an object beside its still owner is attended however long. The owner is whoever carried it in:
it was inside their box just before it came to rest, and they were by it when it did. An object
nobody was seen bringing is never "left" (a moved chair, a reflection or a door behind glass, a
person's own ghost, a start-up artefact), and a still region that is part of a person sitting
or standing there is not an object at all. Passers-by never reset or drop it: once an owner is
known only the owner counts (picked up again under a new track id where the tracker lost them),
and with the owner gone only someone who stands by it (a person track that is not moving)
attends it. A candidate that people walk in front of is kept through the occlusion. Its class
comes from detections of the thing it is part of, which often box more than the region does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streamd.perception.background import Foreground
from streamd.perception.geometry import Box, Detection
from streamd.perception.tracker import Track
from streamd.perception.world import EventKind, SceneEvent

__all__ = ["ObjectParams", "StillObject", "StillObjects"]

_SAMPLES_KEPT = 64
MIN_NAMED = 2  # samples a still object must be detected as a class in to take its name
OBJECT_MAX_FRAME = 0.2  # a thing that can be left fills at most this part of the frame


@dataclass(frozen=True)
class ObjectParams:
    proximity_widths: float = 2.0  # "about two object widths"
    owner_window_s: float = 4.0  # the owner is who was by it this long before it was still
    occlusion_grace_s: float = 30.0  # keep a hidden object this long
    lost_grace_s: float = 2.0  # drop an object that vanished (not hidden) after this long
    owner_seen_s: float = 2.0  # an owner unseen for longer has gone
    carried_cover: float = 0.25  # of the object inside its owner's box as they brought it
    rest_window_s: float = 1.5  # the owner is by it within this of its coming to rest
    still_person_s: float = 3.0  # a still person's boxes this recent still outline them


@dataclass
class StillObject:
    track_id: int
    box: Box
    since: float  # still since (placed)
    last_seen: float
    votes: dict[str, float] = field(default_factory=dict)
    named: dict[str, int] = field(default_factory=dict)  # samples with a detection of it
    owner_id: int | None = None
    owner_box: Box | None = None
    owner_seen: float | None = None  # when the owner was last seen
    last_attended: float = 0.0
    unattended_since: float | None = None
    last_gap: float | None = None  # the owner's distance at the last attended sample

    @property
    def label(self) -> str | None:
        """The class most detections of it gave, once it has been named in more than one
        sample: one bad frame (a backpack called "cat") does not name a still object."""
        if not self.votes:
            return None
        best = max(self.votes.items(), key=lambda kv: (kv[1], kv[0]))[0]
        return best if self.named.get(best, 0) >= MIN_NAMED else None

    @property
    def score(self) -> float:
        return max(self.votes.values(), default=0.0)


def _same(a: Box, b: Box) -> bool:
    """The same still region, grown or shrunk by what stands next to it."""
    if a.iou(b) > 0.2:
        return True
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    return ix * iy >= 0.6 * min(a.area, b.area)


@dataclass
class StillObjects:
    """One camera's still objects. Not thread-safe."""

    new_id: Callable[[], int]
    params: ObjectParams = field(default_factory=ObjectParams)
    objects: dict[int, StillObject] = field(default_factory=dict)
    # Recent sample times: a region is still from its second sample on (in its first it
    # differs from the sample before, which reads as motion), so it came to rest one sample
    # before its `since`, at whatever rate the camera is sampled.
    _samples: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES_KEPT))

    def update(
        self,
        ts: float,
        fg: Foreground,
        people: Sequence[Track],
        detections: Sequence[Detection],
    ) -> tuple[list[StillObject], list[SceneEvent]]:
        """Advance with this sample; returns the objects present and the events."""
        p = self.params
        self._samples.append(ts)
        events: list[SceneEvent] = []
        matched: set[int] = set()
        for region in fg.still:
            obj = next(
                (
                    o
                    for o in self.objects.values()
                    if o.track_id not in matched and _same(o.box, region.box)
                ),
                None,
            )
            if obj is None:
                if any(_part_of_person(region.box, q, ts, p.still_person_s) for q in people):
                    continue  # a still part of a person standing or sitting there, not a thing
                obj = StillObject(self.new_id(), region.box, region.since, ts)
                obj.last_attended = region.since
                obj.owner_id, obj.owner_box = self._owner(obj, people)
                obj.owner_seen = next(
                    (q.last_seen for q in people if q.track_id == obj.owner_id), None
                )
                self.objects[obj.track_id] = obj
                events.append(
                    SceneEvent(
                        EventKind.PLACED,
                        region.since,
                        obj.track_id,
                        None,
                        region.box,
                        details={"owner_id": obj.owner_id},
                    )
                )
            elif region.box.area <= 2.0 * obj.box.area:
                # A region that merged with someone standing next to it keeps the object's box.
                obj.box = region.box
            obj.since = min(obj.since, region.since)
            obj.last_seen = ts
            matched.add(obj.track_id)

        frame_area = fg.fg.size / fg.scale**2
        for obj in list(self.objects.values()):
            if obj.track_id not in matched:
                if fg.overlap(fg.static, obj.box) > 0.5:
                    obj.last_seen = ts  # still there, only younger again after being passed over
                else:
                    hidden = fg.overlap(fg.moving, obj.box) > 0.2 or any(
                        q.box.iou(obj.box) > 0 for q in people if q.last_seen == ts
                    )
                    grace = p.occlusion_grace_s if hidden else p.lost_grace_s
                    if ts - obj.last_seen > grace:
                        del self.objects[obj.track_id]
                        events.append(
                            SceneEvent(EventKind.LEFT, ts, obj.track_id, obj.label, obj.box)
                        )
                    continue
            events.extend(self._attend(obj, ts, people))
            for d in detections:
                if d.label != "person" and _names(d.box, obj.box, frame_area):
                    obj.votes[d.label] = obj.votes.get(d.label, 0.0) + d.score
                    obj.named[d.label] = obj.named.get(d.label, 0) + 1
        present = [o for o in self.objects.values() if o.last_seen == ts]
        return present, events

    def _owner(self, obj: StillObject, people: Sequence[Track]) -> tuple[int | None, Box | None]:
        """The person who brought the object: it arrived inside their box and came to rest
        while they were still by it.

        Two cues, both needed. (1) Carried: in a sample shortly before it became still, the
        person's box covered a good part of the object (someone walking past at a distance
        never does, and a region that appears where nobody was, like a reflection or a
        lighting patch, has no such person). (2) Set down: when the object came to rest (the
        sample before it first read as still) or just after, the person was within reach;
        someone who drops a bag without stopping is a step past it by the next sample. (A
        person's own ghost, where they stood until they moved off, passes both cues; the
        background model tells it by its edges and never reports it as a still region.)"""
        p = self.params
        reach = p.proximity_widths * max(obj.box.width, 1.0)
        shown = max((t for t in self._samples if t < obj.since), default=obj.since)
        best: tuple[tuple[float, float], int, Box] | None = None
        for q in people:
            if q.label is None and q.box.area < 2.0 * obj.box.area:
                continue  # an unnamed region smaller than the object is not whoever brought it
            # (when, how much) the object was last inside their box before it came to rest
            carried = max(
                (
                    (t, obj.box.covered_by(b))
                    for t, b in q.history
                    if obj.since - p.owner_window_s <= t <= obj.since
                    and obj.box.covered_by(b) >= p.carried_cover
                ),
                default=None,
            )
            if carried is None:
                continue
            rest_until = obj.since + p.rest_window_s
            at_rest = [b.gap(obj.box) for t, b in q.history if shown <= t <= rest_until]
            if not at_rest or min(at_rest) > reach:
                continue
            # Two people by it: whoever had it last is who set it down.
            if best is None or carried > best[0]:
                best = (carried, q.track_id, q.box)
        return (None, None) if best is None else (best[1], best[2])

    def _same_owner(self, obj: StillObject, ts: float, people: Sequence[Track]) -> Track | None:
        """The owner under a new track id: the tracker loses a still (seated, half-hidden)
        person now and then and picks them up again as someone new, right where they were."""
        if obj.owner_box is None or obj.owner_seen is None:
            return None
        last = obj.owner_box
        return next(
            (
                q
                for q in people
                if q.last_seen == ts
                and q.first_seen <= obj.owner_seen + self.params.owner_seen_s
                and q.box.iou(last) >= 0.3
            ),
            None,
        )

    def _attend(self, obj: StillObject, ts: float, people: Sequence[Track]) -> list[SceneEvent]:
        p = self.params
        reach = p.proximity_widths * max(obj.box.width, 1.0)
        owner = next((q for q in people if q.track_id == obj.owner_id), None)
        if owner is None or ts - owner.last_seen > p.owner_seen_s:
            owner = self._same_owner(obj, ts, people) or owner
        gap: float | None = None
        # An owner lost for a moment is still where they were last seen, unless they were
        # last seen walking out of the frame.
        if (
            owner is not None
            and ts - owner.last_seen <= p.owner_seen_s
            and owner.out_of_view_at is None
        ):
            obj.owner_id, obj.owner_box = owner.track_id, owner.box
            obj.owner_seen = owner.last_seen
            # An owner staying put has not gone anywhere when the detector crops them
            # shorter for a moment (a seated man's stretched foot left out of his box).
            here = _boxes_here(owner, owner.last_seen, p.still_person_s)
            gap = min((b.gap(obj.box) for b in here), default=owner.box.gap(obj.box))
            # Only an owner seen back by it re-attends a left object: where they were last
            # seen says nothing new (and a still region that grows a little, taking in a
            # shadow, would bring that old place within reach).
            attended = gap <= reach and (owner.last_seen == ts or obj.unattended_since is None)
        else:
            # Owner gone: someone who stands by it (not walking past) attends it.
            attended = any(
                q.last_seen == ts and not q.moving and q.box.gap(obj.box) <= reach for q in people
            )
        if obj.owner_id is None:
            # Nobody brought it (a moved chair, a lighting patch, a start-up artefact): it
            # can be placed or removed, but not left by someone.
            attended = True
        if attended:
            obj.last_attended = ts
            obj.last_gap = gap
            if obj.unattended_since is not None:
                obj.unattended_since = None
                return [SceneEvent(EventKind.ATTENDED, ts, obj.track_id, obj.label, obj.box)]
            return []
        if obj.unattended_since is None:
            obj.unattended_since = _onset(owner, obj, reach, ts, gap)
            return [
                SceneEvent(
                    EventKind.UNATTENDED,
                    obj.unattended_since,
                    obj.track_id,
                    obj.label,
                    obj.box,
                    details={
                        "owner_id": obj.owner_id,
                        "owner_box": None if obj.owner_box is None else obj.owner_box.as_list(),
                    },
                )
            ]
        return []


def _onset(
    owner: Track | None, obj: StillObject, reach: float, ts: float, gap: float | None
) -> float:
    """When the object became unattended: where the owner's own path shows them crossing
    `reach` (the object may be found only after they left), else between the last attended
    sample and this one."""
    if owner is not None:
        # only since the object was there: an older crossing is about something else
        path = [(t, b.gap(obj.box)) for t, b in owner.history if obj.since <= t <= ts]
        for (ta, ga), (tb, gb) in zip(reversed(path[:-1]), reversed(path[1:]), strict=True):
            if ga <= reach < gb:
                return _crossing(ta, ga, tb, gb, reach)
    return _crossing(obj.last_attended, obj.last_gap, ts, gap, reach)


def _crossing(t0: float, gap0: float | None, t1: float, gap1: float | None, reach: float) -> float:
    """When the owner crossed `reach` between two samples (1 s apart at the default rate),
    assuming they walked steadily; the later sample's time when that cannot be told."""
    if gap0 is None or gap1 is None or gap1 <= gap0 or not t0 < t1:
        return t1
    frac = min(1.0, max(0.0, (reach - gap0) / (gap1 - gap0)))
    return t0 + frac * (t1 - t0)


def _stood(before: Box, after: Box) -> bool:
    """Is `after` where `before` was: its centre less than half its width from theirs (a
    person shifting or cropped differently changes their box's shape, not where it is; a
    walker moves about a body width a second)."""
    (ax, ay), (bx, by) = before.center, after.center
    return abs(bx - ax) + abs(by - ay) <= 0.5 * after.width


def _names(det: Box, obj: Box, frame_area: float) -> bool:
    """Is this detection of the thing the still region belongs to? The region is often only
    the part of a thing that differs from the background (a bottle's cap or label, a bag's
    dark side), so a detection containing it names it too, if that detection is itself
    object-sized and not many times the region (a table under a cup, a bed)."""
    if det.iou(obj) > 0.3:
        return True
    return (
        obj.covered_by(det) >= 0.6
        and det.area <= 16.0 * obj.area
        and det.area <= OBJECT_MAX_FRAME * frame_area
    )


def _part_of_person(box: Box, person: Track, ts: float, recent_s: float) -> bool:
    """Is this still region part of a person who is there now (a seated person's leg, a
    standing person's coat)? A still person's box flickers as they shift (the detector
    crops a knee, a bent arm), so any of their recent boxes taken where they are now
    counts; boxes from where they walked in from do not (a bag they set down there is not
    part of them), nor do those of someone last seen walking out of the frame."""
    if person.label != "person" or ts - person.last_seen > recent_s:
        return False
    if person.out_of_view_at is not None:
        return False
    return any(box.covered_by(b) > 0.5 for b in _boxes_here(person, ts, recent_s))


def _boxes_here(person: Track, ts: float, recent_s: float) -> list[Box]:
    """A person's recent boxes taken where they are now: for someone staying put, the outline
    of their body however the detector cropped it in each (a knee, a bent arm, a foot
    stretched out); for someone walking, only the latest."""
    return [b for t, b in person.history if t >= ts - recent_s and _stood(b, person.box)]

"""The world model's tracks and still objects as the immutable `TrackState`s of a WorldState."""

from __future__ import annotations

from streamd.ingest.frame import Frame
from streamd.perception.colours import dominant_colour, person_colour
from streamd.perception.objects import StillObject
from streamd.perception.tracker import Track
from streamd.perception.world import Posture, TrackKind, TrackState

__all__ = ["object_state", "track_state"]


def track_state(tr: Track, frame: Frame, ts: float, analysed: bool) -> TrackState:
    """What a track is at `ts`, as rules and the window read it; its colour is read off
    `frame` only when it is visible in an analysed sample."""
    visible = tr.last_seen == ts
    colour = None
    if visible and analysed:
        pick = person_colour if tr.label == "person" else dominant_colour
        colour = pick(frame.image, tr.box)
    return TrackState(
        track_id=tr.track_id,
        kind=TrackKind.BLOB if tr.label is None else TrackKind.DETECTED,
        label=tr.label,
        score=round(tr.score, 3),
        box=tr.box,
        first_seen=tr.first_seen,
        last_seen=tr.last_seen,
        visible=visible,
        detected=tr.detected_at == ts or tr.label is None,
        moving=tr.moving,
        stationary_since=None if tr.moving else tr.last_moved,
        velocity=tr.velocity(),
        history=tuple(tr.history),
        colour=colour,
        zones=tr.zones,
        posture=tr.posture if tr.label == "person" else Posture.UNKNOWN,
        posture_since=tr.posture_since,
        fallen_at=tr.fallen_at,
        lying_since=tr.lying_since,
    )


def object_state(o: StillObject) -> TrackState:
    """A still object as a track: placed, owned, attended or not."""
    return TrackState(
        track_id=o.track_id,
        kind=TrackKind.OBJECT,
        label=o.label,
        score=round(o.score, 3),
        box=o.box,
        first_seen=o.since,
        last_seen=o.last_seen,
        visible=True,
        moving=False,
        stationary_since=o.since,
        velocity=(0.0, 0.0),
        history=((o.last_seen, o.box),),
        placed_at=o.since,
        owner_id=o.owner_id,
        owner_box=o.owner_box,
        last_attended=o.last_attended,
        unattended_since=o.unattended_since,
    )

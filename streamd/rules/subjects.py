"""Which tracks of a WorldState a rule's subject (an object query) is about."""

from __future__ import annotations

from streamd.perception.geometry import Box
from streamd.perception.world import Posture, TrackKind, TrackState, WorldState
from streamd.rules.ir import ANY_CLASS, UNLABELLED, Subject

__all__ = ["class_matches", "matches"]

_POSTURES = {"upright": Posture.UPRIGHT, "low": Posture.LOW, "lying": Posture.LYING}


def class_matches(classes: tuple[str, ...], track: TrackState, lenient: bool = False) -> bool:
    """Does the track's class fit? `lenient`: a still object the detector could not name fits
    any object query (bags at surveillance distance are often unnamed); one it named as
    something else does not."""
    if ANY_CLASS in classes:
        return True
    label = track.label
    if label is None:
        if UNLABELLED in classes and track.kind is TrackKind.OBJECT:
            return True
        return lenient and track.kind is TrackKind.OBJECT and "person" not in classes
    return label in classes


def _related(subject: Subject, track: TrackState, world: WorldState) -> bool:
    rel = subject.relation
    if rel is None:
        return True
    for other in world.tracks:
        if other.track_id == track.track_id or not other.visible:
            continue
        if not class_matches(rel.classes, other):
            continue
        if rel.kind == "on" and _inside(track.box, other.box) >= 0.5:
            return True
        if rel.kind == "near" and track.box.gap(other.box) <= max(track.box.width, 1.0):
            return True
    return False


def _inside(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    return ix * iy / a.area if a.area > 0 else 0.0


def matches(subject: Subject, track: TrackState, world: WorldState, lenient: bool = False) -> bool:
    """The track is what the subject asks for: class, colour, zone, state and relation."""
    if not class_matches(subject.classes, track, lenient):
        return False
    if subject.colour is not None and track.colour not in (None, subject.colour):
        return False
    if subject.colour is not None and track.colour is None and track.visible:
        return False
    if subject.zone is not None and subject.zone not in track.zones:
        return False
    state = subject.state
    if state == "moving" and not track.moving:
        return False
    if state == "stationary" and track.moving:
        return False
    if state in _POSTURES and track.posture is not _POSTURES[state]:
        return False
    return _related(subject, track, world)

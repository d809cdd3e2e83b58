"""Build WorldStates by hand for rule tests (what the world model would report)."""

from __future__ import annotations

import numpy as np

from streamd.ingest.frame import Frame
from streamd.perception.geometry import Box
from streamd.perception.world import Posture, SceneEvent, TrackKind, TrackState, WorldState


def track(
    track_id: int,
    box: Box,
    t: float,
    label: str | None = "person",
    kind: TrackKind = TrackKind.DETECTED,
    **kw: object,
) -> TrackState:
    fields: dict[str, object] = {
        "track_id": track_id,
        "kind": kind,
        "label": label,
        "score": 0.8,
        "box": box,
        "first_seen": t,
        "last_seen": t,
        "visible": True,
        "moving": False,
        "stationary_since": t,
        "velocity": (0.0, 0.0),
        "history": ((t, box),),
        "posture": Posture.UPRIGHT if label == "person" else Posture.UNKNOWN,
    }
    fields.update(kw)
    return TrackState(**fields)  # type: ignore[arg-type]


def people(t: float, n: int) -> list[TrackState]:
    return [track(1 + i, Box(10 + 60 * i, 10, 50 + 60 * i, 100), t) for i in range(n)]


def world(
    t: float,
    tracks: list[TrackState] | tuple[TrackState, ...] = (),
    events: tuple[SceneEvent, ...] = (),
    motion: float = 0.0,
    brightness: float = 100.0,
) -> WorldState:
    frame = Frame("cam", np.zeros((120, 400, 3), np.uint8), t, t, int(t))
    return WorldState(frame, True, tuple(tracks), events, motion, 0.0, brightness)

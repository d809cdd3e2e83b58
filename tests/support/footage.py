"""Run the real world model and rules over a clip from ../shared/media, as fast as it decodes.

Frames are sampled at `fps` by their stream time, which becomes the wall clock (`T0` + pts); the
first frame is repeated for `pad_s` first, as a live camera's background model would have seen
the scene before anything happens. Perception runs with the pose estimator the daemon loads by
default (`model.pose: auto`: MediaPipe where installed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from streamd.config import RuleConfig
from streamd.events.change import EventChange
from streamd.ingest.frame import Frame, Image
from streamd.perception.detector import YoloxDetector
from streamd.perception.model import Perception
from streamd.perception.pose import PoseEstimator, load_pose
from streamd.perception.world import SceneEvent
from streamd.perception.zones import ZoneSet
from streamd.rules.compiler import compile_rule
from streamd.rules.engine import RuleRunner, RulesEngine

T0 = 1_700_000_000.0


@dataclass
class ClipRun:
    events: list[SceneEvent] = field(default_factory=list)
    changes: list[EventChange] = field(default_factory=list)

    def fired(self, rule: str) -> list[float]:
        """Start times (clip seconds) of the events a rule opened."""
        return [c.start_time - T0 for c in self.changes if c.kind == "new" and c.rule_name == rule]

    def scene(self, kind: str) -> list[SceneEvent]:
        return [e for e in self.events if e.kind.value == kind]


@functools.cache
def _pose(setting: str) -> PoseEstimator | None:
    # One per process, as the daemon shares one between its cameras: loading MediaPipe's graph
    # takes longer than running a short clip.
    return load_pose(setting)


def run_clip(
    path: Path,
    model: Path,
    rules: dict[str, str],
    fps: float = 1.0,
    pad_s: float = 5.0,
    zones: ZoneSet | None = None,
    phase_s: float = 0.0,
    pose: PoseEstimator | str | None = "auto",
) -> ClipRun:
    """`pose`: an estimator, None for none, or a `model.pose` setting to load it from."""
    estimator = _pose(pose) if isinstance(pose, str) else pose
    perception = Perception(YoloxDetector(model), zones=zones or ZoneSet(), pose=estimator)
    engine = RulesEngine(
        "clip",
        [RuleRunner("clip", RuleConfig(name=n, text=t), compile_rule(t)) for n, t in rules.items()],
        segment_s=2.0,
    )
    run = ClipRun()
    seq = 0

    def feed(image: object, t: float) -> None:
        nonlocal seq
        seq += 1
        world = perception.observe(Frame("clip", image, T0 + t, t, seq))  # type: ignore[arg-type]
        run.events.extend(world.events)
        run.changes.extend(engine.feed(world))

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        next_t, first = phase_s, True  # phase: where the 1 fps grid falls in the clip
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            image = frame.to_ndarray(format="bgr24")
            if first:
                for i in range(round(pad_s * fps)):
                    feed(image, -pad_s + i / fps)
                first = False
            feed(image, t)
    run.changes.extend(engine.flush())
    return run


def frame_at(path: Path, t: float) -> Image:
    """The first frame at or after `t` seconds into a clip (BGR)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if float(frame.time or 0.0) + 1e-6 >= t:
                return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
    raise ValueError(f"{path.name} ends before {t} s")

"""Body pose of one person box: lying or not, from where the head, torso and thighs point.

A box's shape cannot tell someone lying along the camera's axis (head towards it: boxed about
as wide as tall) from someone sitting on the floor; the skeleton can. Torso far from upright
— sideways, or upside down in the image when the head is nearest the camera — in a body that
is straight at the hips is lying; sitting keeps the torso upright, and leaning or bending
forward folds the body at the hips.

MediaPipe 0.10.21 (`solutions.pose`, the last wheel that bundles its models) is the estimator.
Its wheel declares numpy < 2 and protobuf < 5, which pip will not resolve beside this
project's numpy 2 and onnx (protobuf ≥ 6.31), though it imports and runs with both:
`scripts/install-pose` installs it without its declared dependencies. It is optional: without
it, posture comes from boxes alone.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamd.errors import ModelError
from streamd.ingest.frame import Image
from streamd.perception.geometry import Box
from streamd.perception.posture import PostureParams, classify
from streamd.perception.tracker import Track
from streamd.perception.world import Posture

__all__ = [
    "Landmark",
    "MediapipePose",
    "PoseEstimator",
    "PoseParams",
    "ask_pose",
    "load_pose",
    "lying_from_landmarks",
]

log = logging.getLogger(__name__)

# BlazePose landmark indices.
_NOSE, _SHOULDERS, _HIPS, _KNEES = 0, (11, 12), (23, 24), (25, 26)


@dataclass(frozen=True)
class PoseParams:
    lying_torso_deg: float = 60.0  # torso at least this far from upright (180: head down)
    max_hip_bend_deg: float = 60.0  # thighs this near the torso's line: straight, not folded
    min_visibility: float = 0.5  # shoulders and hips, mean: below it the pose says nothing
    knees_visibility: float = 0.5
    edge_px: float = 2.0  # a box this near the top or a side edge is a body partly out of view
    pad: float = 0.3  # of the box's size added on every side of the crop: the whole body
    min_side_px: int = 48  # smaller boxes are too few pixels for a skeleton
    reuse_s: float = 3.0  # an answer holds this long for a box that stayed put
    same_box: float = 0.7  # IoU: the box stayed put


DEFAULT_PARAMS = PoseParams()


@dataclass(frozen=True, slots=True)
class Landmark:
    x: float  # pixels
    y: float
    visibility: float


class PoseEstimator(Protocol):
    def lying(self, image: Image, box: Box) -> bool | None:
        """True: the person in `box` lies; False: they do not; None: no skeleton found."""
        ...


def _tilt_deg(top: tuple[float, float], bottom: tuple[float, float]) -> float:
    """Angle of bottom → top from the image's up: 0 upright, 90 sideways, 180 upside down."""
    return _between(bottom, top, (0.0, 0.0), (0.0, -1.0))


def _mid(pts: Sequence[Landmark], ids: tuple[int, int]) -> tuple[float, float]:
    a, b = pts[ids[0]], pts[ids[1]]
    return ((a.x + b.x) / 2, (a.y + b.y) / 2)


def lying_from_landmarks(pts: Sequence[Landmark], p: PoseParams) -> bool | None:
    """Lying, from 33 BlazePose landmarks; None where shoulders and hips are not seen well.

    Lying is a torso far from upright in a body that is straight at the hips. Leaning forward
    to sit down or stand up, or bending to pick something up, tilts the torso as far, but the
    body folds at the hips (thighs at 110-135 degrees to the torso, measured on the footage,
    against 0-40 lying)."""
    trunk = [pts[i].visibility for i in (*_SHOULDERS, *_HIPS)]
    if sum(trunk) / len(trunk) < p.min_visibility:
        return None
    shoulders, hips = _mid(pts, _SHOULDERS), _mid(pts, _HIPS)
    if _tilt_deg(shoulders, hips) < p.lying_torso_deg:
        return False
    knees = [pts[i] for i in _KNEES if pts[i].visibility >= p.knees_visibility]
    if knees:
        knee = (sum(k.x for k in knees) / len(knees), sum(k.y for k in knees) / len(knees))
        return _between(hips, shoulders, knee, hips) <= p.max_hip_bend_deg
    # Thighs unseen (a blanket, the frame's edge): lying if the head is down at hip level
    # or below, not bent forward over them.
    torso_len = math.hypot(shoulders[0] - hips[0], shoulders[1] - hips[1])
    return pts[_NOSE].y >= hips[1] - 0.25 * torso_len


def _between(
    a0: tuple[float, float],
    a1: tuple[float, float],
    b0: tuple[float, float],
    b1: tuple[float, float],
) -> float:
    """Angle in degrees between the directions a0 → a1 and b0 → b1."""
    ax, ay, bx, by = a1[0] - a0[0], a1[1] - a0[1], b1[0] - b0[0], b1[1] - b0[1]
    n = math.hypot(ax, ay) * math.hypot(bx, by)
    return (
        0.0 if n < 1e-6 else math.degrees(math.acos(max(-1.0, min(1.0, (ax * bx + ay * by) / n))))
    )


class MediapipePose:
    """MediaPipe's full pose model on a crop around a person box, one call at a time.

    One instance serves every camera: the graph is not safe to share between threads, and
    it is asked rarely (only about boxes whose shape leaves the posture open)."""

    def __init__(self, params: PoseParams | None = None) -> None:
        import mediapipe as mp  # optional dependency: scripts/install-pose

        self.params = params or DEFAULT_PARAMS
        # Static mode: crops of different people and cameras follow each other, so there is
        # no previous frame to track from. Complexity 1 is the model the wheel bundles
        # (0 and 2 are downloaded on first use).
        self._pose: Any = mp.solutions.pose.Pose(
            static_image_mode=True, model_complexity=1, enable_segmentation=False
        )
        self._lock = threading.Lock()
        self.calls = 0  # for benchmarks and /metrics-style accounting
        self.busy_s = 0.0

    def landmarks(self, image: Image, box: Box) -> list[Landmark] | None:
        p = self.params
        h, w = image.shape[:2]
        if min(box.width, box.height) < p.min_side_px:
            return None
        if box.y1 <= p.edge_px or box.x1 <= p.edge_px or box.x2 >= w - p.edge_px:
            # Partly out of view (an arm reaching in, someone at the side): the model still
            # draws a whole skeleton, guessed. The bottom edge is allowed: someone lying with
            # their head towards the camera often reaches it.
            return None
        padx, pady = p.pad * box.width, p.pad * box.height
        x1, y1 = max(0, int(box.x1 - padx)), max(0, int(box.y1 - pady))
        x2, y2 = min(w, int(box.x2 + padx)), min(h, int(box.y2 + pady))
        crop = np.ascontiguousarray(image[y1:y2, x1:x2, ::-1])  # BGR → RGB
        with self._lock:
            t0 = time.perf_counter()
            result = self._pose.process(crop)
            self.calls += 1
            self.busy_s += time.perf_counter() - t0
        if result.pose_landmarks is None:
            return None
        cw, ch = x2 - x1, y2 - y1
        return [
            Landmark(x1 + lm.x * cw, y1 + lm.y * ch, lm.visibility)
            for lm in result.pose_landmarks.landmark
        ]

    def lying(self, image: Image, box: Box) -> bool | None:
        pts = self.landmarks(image, box)
        return None if pts is None else lying_from_landmarks(pts, self.params)

    def close(self) -> None:
        with self._lock:
            self._pose.close()


def load_pose(setting: str) -> PoseEstimator | None:
    """The estimator `model.pose` names: "auto" (MediaPipe where it works), "mediapipe" (a
    ModelError where it does not) or "off"."""
    if setting == "off":
        return None
    if setting == "auto" and importlib.util.find_spec("mediapipe") is None:
        log.info("pose: off (mediapipe is not installed; scripts/install-pose adds it)")
        return None
    try:
        estimator = MediapipePose()
    except Exception as exc:  # a broken install fails in many ways (protobuf 7: AttributeError)
        if setting == "auto":
            log.warning("pose: off, mediapipe is installed but does not load: %s", exc)
            return None
        raise ModelError(
            f"model.pose is 'mediapipe' but mediapipe does not load ({exc}); reinstall it with "
            "scripts/install-pose, or set model.pose to auto or off"
        ) from exc
    log.info("pose: mediapipe 0.10.21 (pose_landmark_full) for postures boxes leave open")
    return estimator


def ask_pose(
    estimator: PoseEstimator,
    track: Track,
    image: Image,
    ts: float,
    posture: PostureParams,
    params: PoseParams | None = None,
) -> bool:
    """Ask the skeleton about a person the detector boxed now, if the box's shape leaves
    their posture open (LOW: seated, kneeling, or lying towards the camera) and the last
    answer is not for about this box from a moment ago. The answer goes on the track for
    `update_posture`; upright and lying-shaped boxes need no pose (and cost no call).
    True when the estimator was asked."""
    p = params or DEFAULT_PARAMS
    box = track.box
    if track.boxed_at != ts or min(box.width, box.height) < p.min_side_px:
        return False
    if classify(box, track.ref_height, posture) is not Posture.LOW:
        return False
    if (
        track.pose_box is not None
        and track.pose_at is not None
        and ts - track.pose_at < p.reuse_s
        and track.pose_box.iou(box) >= p.same_box
    ):
        return False
    track.pose_lying = estimator.lying(image, box)
    track.pose_box, track.pose_at = box, ts
    return True

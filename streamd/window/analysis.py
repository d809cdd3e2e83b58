"""Per-frame analysis: frame-difference gating, detector and scene model → an Observation."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from streamd.ingest.frame import Frame
from streamd.window.detection import Detection, Detector
from streamd.window.scene import SceneModel, SceneState


@dataclass(frozen=True, slots=True)
class Observation:
    """What is known about the scene at one sampled frame; rules only ever see this."""

    frame: Frame
    detections: tuple[Detection, ...]
    scene: SceneState
    analysed: bool  # False: frame unchanged, the previous detections were reused

    @property
    def camera(self) -> str:
        return self.frame.camera

    @property
    def ts(self) -> float:
        return self.frame.received_at


@dataclass
class AnalysisStats:
    frames: int = 0
    analysed: int = 0
    gated: int = 0
    detect_s: float = 0.0
    scene_s: float = 0.0


@dataclass
class Analyser:
    """Turns sampled frames into Observations for one camera.

    The scene model sees every sampled frame (it is cheap and is what measures change); the
    detector only runs when enough of the frame changed since the last sample, so a static scene
    costs almost nothing and does not flood the window with identical tokens.
    """

    detector: Detector | None
    diff_threshold: float = 0.004
    scene: SceneModel = field(default_factory=SceneModel)
    stats: AnalysisStats = field(default_factory=AnalysisStats)
    _last: tuple[Detection, ...] = ()
    _have_last: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def analyse(self, frame: Frame) -> Observation:
        """Blocking (numpy/OpenCV): call from a worker thread."""
        with self._lock:
            self.stats.frames += 1
            t0 = time.perf_counter()
            change = self.scene.measure(frame.image)
            gated = self._have_last and change < self.diff_threshold
            detections = self._last
            if self.detector is not None and not gated:
                detections = tuple(self.detector.detect(frame.image))
            t1 = time.perf_counter()
            # The scene model wants this frame's detections: people attend objects, labels.
            scene = self.scene.update(frame.received_at, list(detections))
            t2 = time.perf_counter()
            self.stats.detect_s += t1 - t0
            self.stats.scene_s += t2 - t1
            if gated:
                self.stats.gated += 1
            else:
                self.stats.analysed += 1
            self._last = detections
            self._have_last = True
            return Observation(frame, detections, scene, analysed=not gated)

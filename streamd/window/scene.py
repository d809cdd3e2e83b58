"""Class-agnostic scene model: motion, static foreground and left-object candidates.

The detector is weak on bags at surveillance distance, so a left object is found the classic way:
a long-term background (learned slowly, only where the scene is background) against which new
things show up as foreground, split into *moving* foreground (it also changed since the previous
sample) and *static* foreground (it did not). A static region older than a few seconds is a
candidate object; it is tracked so that a person walking in front of it does not reset its age.
The detector labels candidates where it can; people (detected, or moving foreground blobs next to
the object) mark it attended.

Everything runs on a downscaled copy (≤ 320 px wide), a few hundred microseconds per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from streamd.ingest.frame import Image
from streamd.window.detection import Box, Detection

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class StaticObject:
    """A candidate left object: where it is, since when it has been still, when last attended."""

    track_id: int
    box: Box
    since: float
    last_attended: float
    label: str = "object"
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class SceneState:
    """What the scene model saw on one sample."""

    motion: float  # fraction of the frame that is moving foreground
    changed: float  # fraction of pixels changed since the previously analysed sample
    moving_boxes: tuple[Box, ...]
    static_objects: tuple[StaticObject, ...]
    brightness: float


@dataclass
class SceneParams:
    width: int = 320
    threshold: int = 28  # per-channel absolute difference that counts as "different"
    min_static_s: float = 2.0  # a still region becomes a candidate after this long
    absorb_s: float = 900.0  # a still object becomes background after this long
    bg_alpha: float = 0.05  # background adaptation (lighting) per sample
    warmup_samples: int = 3
    min_area: float = 0.0006  # of the frame, smallest candidate
    max_area: float = 0.2  # of the frame, largest candidate
    proximity_widths: float = 2.0  # "about two object widths": closer than this is attended
    occlusion_grace_s: float = 20.0  # keep a hidden candidate this long
    lost_grace_s: float = 2.0  # drop a candidate that vanished (not hidden) after this long


@dataclass
class _Track:
    track_id: int
    box: Box
    since: float
    last_seen: float
    last_attended: float
    label: str = "object"
    score: float = 0.0


def _maxdiff(a: Image, b: Image) -> npt.NDArray[np.uint8]:
    out: npt.NDArray[np.uint8] = cv2.absdiff(a, b).max(axis=2)
    return out


@dataclass
class SceneModel:
    """Dual-background scene model for one camera. Not thread-safe: one caller at a time."""

    params: SceneParams = field(default_factory=SceneParams)
    _bg: FloatArray | None = None
    _prev: Image | None = None
    _static_since: npt.NDArray[np.float64] | None = None
    _samples: int = 0
    _scale: float = 1.0
    _tracks: dict[int, _Track] = field(default_factory=dict)
    _next_id: int = 1
    _pending: Image | None = None

    def _small(self, image: Image) -> Image:
        h, w = image.shape[:2]
        self._scale = min(1.0, self.params.width / w)
        if self._scale < 1.0:
            size = (round(w * self._scale), round(h * self._scale))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
        return np.asarray(cv2.GaussianBlur(image, (5, 5), 0), np.uint8)

    def _to_full(self, x: int, y: int, w: int, h: int) -> Box:
        s = 1.0 / self._scale
        return Box(x * s, y * s, (x + w) * s, (y + h) * s)

    def measure(self, image: Image) -> float:
        """Fraction of pixels that changed since the previous sample (1.0 for the first).

        Cheap; the caller uses it to decide whether the detector needs to run, then calls
        `update` for the same image.
        """
        small = self._small(image)
        self._pending = small
        if self._prev is None or self._prev.shape != small.shape:
            return 1.0
        return float((_maxdiff(small, self._prev) > self.params.threshold).mean())

    def observe(self, image: Image, ts: float, detections: list[Detection]) -> SceneState:
        self.measure(image)
        return self.update(ts, detections)

    def update(self, ts: float, detections: list[Detection]) -> SceneState:
        """Advance the model with the image given to the last `measure` call."""
        p = self.params
        small = self._pending
        assert small is not None, "measure() first"
        n_px = small.shape[0] * small.shape[1]
        if self._bg is None or self._prev is None or self._bg.shape[:2] != small.shape[:2]:
            self._bg = small.astype(np.float32)
            self._prev = small
            self._static_since = np.full(small.shape[:2], np.inf)
            self._samples = 1
            return SceneState(0.0, 1.0, (), (), float(small.mean()))
        assert self._static_since is not None
        self._samples += 1
        bg_u8 = np.asarray(cv2.convertScaleAbs(self._bg), np.uint8)
        changed = _maxdiff(small, self._prev) > p.threshold
        fg = _maxdiff(small, bg_u8) > p.threshold
        # Changed AND foreground: only where something is now, not where it was a sample ago
        # (that spot matches the background again).
        moving_core = (changed & fg).astype(np.uint8)
        moving = cv2.dilate(moving_core, np.ones((5, 5), np.uint8)) > 0
        static = fg & ~moving
        self._static_since = np.where(
            static, np.minimum(self._static_since, ts), np.inf
        )  # np.minimum keeps the first time a pixel became static
        warm = self._samples <= p.warmup_samples
        learn = ~moving if warm else ~fg
        alpha = 0.5 if warm else p.bg_alpha
        cv2.accumulateWeighted(small, self._bg, alpha, mask=learn.astype(np.uint8))
        absorbed = (ts - self._static_since) > p.absorb_s
        if absorbed.any():
            self._bg[absorbed] = small[absorbed]
            self._static_since[absorbed] = np.inf
        self._prev = small

        # Shape is judged on the undilated mask: dilation fattens thin sweeping bands and
        # streaks until they look as solid as a person.
        moving_boxes = self._boxes(
            cv2.morphologyEx(moving_core, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0, n_px
        )
        old_static = np.asarray(
            cv2.morphologyEx(
                ((ts - self._static_since) >= p.min_static_s).astype(np.uint8),
                cv2.MORPH_OPEN,
                np.ones((3, 3), np.uint8),
            ),
            np.uint8,
        )
        candidates = self._candidates(old_static, small, bg_u8, n_px)
        objects = self._track(candidates, static, moving, moving_boxes, detections, ts)
        return SceneState(
            motion=float(moving.mean()),
            changed=float(changed.mean()),
            moving_boxes=tuple(b for b, _ in moving_boxes),
            static_objects=objects,
            brightness=float(small.mean()),
        )

    def _boxes(self, mask: BoolArray, n_px: int) -> list[tuple[Box, float]]:
        """Blob-like moving regions with their pixel area (full-frame pixels): big enough, and
        filling a fair part of their box, which people do and sweeping light bands, rain streaks
        and long shadows do not."""
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        out = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= self.params.min_area * n_px and area >= 0.5 * w * h:
                out.append((self._to_full(x, y, w, h), area / self._scale**2))
        return out

    def _candidates(
        self, mask: npt.NDArray[np.uint8], small: Image, bg: Image, n_px: int
    ) -> list[tuple[Box, float]]:
        """Static regions that could be objects: not tiny, not huge, not cut by the frame edge
        (a region at the border is something entering or leaving, or a start-up ghost), and not
        a ghost (the background's edges are where the region's outline is, not the frame's)."""
        p = self.params
        assert self._static_since is not None
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        hgt, wid = mask.shape
        out: list[tuple[Box, float]] = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if not p.min_area * n_px <= area <= p.max_area * n_px:
                continue
            if x <= 1 or y <= 1 or x + w >= wid - 1 or y + h >= hgt - 1:
                continue
            region = labels == i
            if self._is_ghost(region, small, bg):
                self._static_since[region] = np.inf
                assert self._bg is not None
                self._bg[region] = small[region]
                continue
            since = float(self._static_since[region].min())
            out.append((self._to_full(x, y, w, h), since))
        return out

    @staticmethod
    def _is_ghost(region: BoolArray, small: Image, bg: Image) -> bool:
        r8 = region.astype(np.uint8)
        ring = (
            cv2.dilate(r8, np.ones((5, 5), np.uint8)) - cv2.erode(r8, np.ones((3, 3), np.uint8))
        ) > 0

        def edge(img: Image) -> float:
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
            gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
            return float(cv2.magnitude(gx, gy)[ring].mean())

        return edge(bg) > 1.5 * edge(small) + 1.0

    def _track(
        self,
        candidates: list[tuple[Box, float]],
        static: BoolArray,
        moving: BoolArray,
        moving_boxes: list[tuple[Box, float]],
        detections: list[Detection],
        ts: float,
    ) -> tuple[StaticObject, ...]:
        p = self.params
        matched: set[int] = set()
        for box, since in candidates:
            best, best_iou = None, 0.2
            for tr in self._tracks.values():
                if tr.track_id in matched:
                    continue
                iou = tr.box.iou(box)
                if iou > best_iou:
                    best, best_iou = tr, iou
            if best is None:
                best = _Track(self._next_id, box, since, ts, since)
                self._tracks[best.track_id] = best
                self._next_id += 1
            best.box = box
            best.since = min(best.since, since)
            best.last_seen = ts
            matched.add(best.track_id)

        people = [d.box for d in detections if d.label == "person"]
        for tid in list(self._tracks):
            tr = self._tracks[tid]
            if tid not in matched and self._overlap(static, tr.box) > 0.5:
                # still there, only younger than min_static_s again after being passed over
                tr.last_seen = ts
                matched.add(tid)
            if tid not in matched:
                hidden = self._overlap(moving, tr.box) > 0.2 or any(
                    b.iou(tr.box) > 0 for b in people
                )
                grace = p.occlusion_grace_s if hidden else p.lost_grace_s
                if ts - tr.last_seen > grace:
                    del self._tracks[tid]
                continue
            reach = p.proximity_widths * max(tr.box.width, 1.0)
            near_person = any(b.gap(tr.box) <= reach for b in people)
            # A solid moving blob at least the object's size within reach: someone handling it
            # or standing by it, detected or not (people are bigger than what they leave).
            near_motion = any(
                b.gap(tr.box) <= reach and area >= tr.box.area for b, area in moving_boxes
            )
            if near_person or near_motion:
                tr.last_attended = max(tr.last_attended, ts)
            label, score = self._label(tr.box, detections)
            if label != "object" or tr.label == "object":
                tr.label, tr.score = label, max(score, tr.score if label == tr.label else 0.0)
        return tuple(
            StaticObject(t.track_id, t.box, t.since, t.last_attended, t.label, t.score)
            for t in self._tracks.values()
            if t.track_id in matched
        )

    def _overlap(self, mask: BoolArray, box: Box) -> float:
        s = self._scale
        x1, y1 = max(0, math.floor(box.x1 * s)), max(0, math.floor(box.y1 * s))
        x2, y2 = math.ceil(box.x2 * s), math.ceil(box.y2 * s)
        sub = mask[y1:y2, x1:x2]
        return float(sub.mean()) if sub.size else 0.0

    @staticmethod
    def _label(box: Box, detections: list[Detection]) -> tuple[str, float]:
        best = ("object", 0.0)
        for d in detections:
            if d.label != "person" and d.box.iou(box) > 0.3 and d.score > best[1]:
                best = (d.label, d.score)
        return best


__all__ = ["SceneModel", "SceneParams", "SceneState", "StaticObject"]

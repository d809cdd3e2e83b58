"""Class-agnostic background model: motion, static foreground, placed and removed regions.

The detector is weak on bags at surveillance distance, so still objects are found the classic
way: a long-term background (learned slowly, only where the scene is background) against which
new things show up as foreground, split into *moving* foreground (it also changed since the
previous sample) and *static* foreground (it did not). A static region older than a few seconds
is a candidate object. When the region is instead a *ghost* — the background still holds
something that has gone (a bottle taken off a table) — it is reported as removed and relearnt.

Everything runs on a downscaled copy (≤ 320 px wide), a few hundred microseconds per sample.
`prepare` does the cheap part (downscale, change since the previous sample) so the caller can
decide whether to run the detector before `update` advances the model with the same sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from streamd.ingest.frame import Image
from streamd.perception.geometry import Box

__all__ = ["BackgroundModel", "BackgroundParams", "Foreground", "Prepared", "StillRegion"]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
_K3 = np.ones((3, 3), np.uint8)
_K5 = np.ones((5, 5), np.uint8)


@dataclass(frozen=True, slots=True)
class StillRegion:
    """A static foreground region (full-frame box) and when it became still."""

    box: Box
    since: float


@dataclass(frozen=True, slots=True)
class Prepared:
    """One sample, downscaled and blurred, and how much of it changed since the previous one."""

    small: Image
    scale: float
    changed: float  # 1.0 for the first sample


@dataclass(frozen=True, slots=True)
class Foreground:
    """What the background model saw on one sample (masks at the downscaled size)."""

    scale: float
    motion: float  # fraction of the frame that is moving foreground
    changed: float
    brightness: float
    moving_boxes: tuple[tuple[Box, float], ...]  # solid moving blobs with their pixel area
    still: tuple[StillRegion, ...]  # object-sized static regions (candidates)
    removed: tuple[StillRegion, ...]  # ghosts: background that is no longer there
    fg: BoolArray  # any foreground
    moving: BoolArray
    static: BoolArray

    def overlap(self, mask: BoolArray, box: Box) -> float:
        """Fraction of `box` (full-frame pixels) covered by `mask`."""
        s = self.scale
        x1, y1 = max(0, math.floor(box.x1 * s)), max(0, math.floor(box.y1 * s))
        x2, y2 = math.ceil(box.x2 * s), math.ceil(box.y2 * s)
        sub = mask[y1:y2, x1:x2]
        return float(sub.mean()) if sub.size else 0.0

    def blob_in(self, area: Box, min_fraction: float = 0.02) -> Box | None:
        """The bounding box (full-frame) of the foreground inside `area`, if there is enough."""
        s = self.scale
        h, w = self.fg.shape
        x1, y1 = max(0, math.floor(area.x1 * s)), max(0, math.floor(area.y1 * s))
        x2, y2 = min(w, math.ceil(area.x2 * s)), min(h, math.ceil(area.y2 * s))
        sub = self.fg[y1:y2, x1:x2]
        if sub.size == 0 or sub.mean() < min_fraction:
            return None
        sub8 = cv2.morphologyEx(sub.astype(np.uint8), cv2.MORPH_OPEN, _K3)
        pts = cv2.findNonZero(sub8)
        if pts is None:
            return None
        bx, by, bw, bh = cv2.boundingRect(pts)
        inv = 1.0 / s
        return Box((x1 + bx) * inv, (y1 + by) * inv, (x1 + bx + bw) * inv, (y1 + by + bh) * inv)


@dataclass
class BackgroundParams:
    width: int = 320
    threshold: int = 28  # per-channel absolute difference that counts as "different"
    min_static_s: float = 2.0  # a still region becomes a candidate after this long
    absorb_s: float = 900.0  # a still object becomes background after this long
    bg_alpha: float = 0.05  # background adaptation (lighting) per sample
    warmup_samples: int = 3
    min_area: float = 0.0006  # of the frame, smallest candidate
    max_area: float = 0.2  # of the frame, largest candidate


def _maxdiff(a: Image, b: Image) -> npt.NDArray[np.uint8]:
    """Largest per-channel absolute difference (OpenCV: numpy's max over the channel axis is
    ten times slower on interleaved pixels)."""
    c0, c1, c2 = cv2.split(cv2.absdiff(a, b))
    return np.asarray(cv2.max(cv2.max(c0, c1), c2), np.uint8)


def _edges(img: Image) -> FloatArray:
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    return np.asarray(cv2.magnitude(gx, gy), np.float32)


def is_ghost(region: BoolArray, small: Image, bg: Image) -> bool:
    """Is this foreground region something that left (its outline and colour are in the
    background, not in the frame) rather than something that arrived?

    Two cues must agree, so that an object set down against an edge-rich background (a
    cabinet, a pole, a bench) is not taken for a ghost: (1) the region's outline is a stronger
    edge in the background than in the frame; (2) in the frame, the region's inside looks like
    its surroundings (the hole was filled by what is around it) more than it does in the
    background. Overwhelming edge evidence alone also counts.
    """
    r8 = region.astype(np.uint8)
    contour = (cv2.dilate(r8, _K3) - cv2.erode(r8, _K3)) > 0
    e_cur = float(_edges(small)[contour].mean())
    e_bg = float(_edges(bg)[contour].mean())
    if e_bg > 3.0 * e_cur + 2.0:
        return True
    if e_bg <= 1.3 * e_cur + 1.0:
        return False
    outer = (cv2.dilate(r8, np.ones((9, 9), np.uint8)) - cv2.dilate(r8, _K3)) > 0
    inside = region & (cv2.erode(r8, _K3) > 0)
    if not outer.any() or not inside.any():
        return True
    around = small[outer].astype(np.float32).mean(axis=0)
    d_cur = float(np.abs(small[inside].astype(np.float32).mean(axis=0) - around).max())
    d_bg = float(np.abs(bg[inside].astype(np.float32).mean(axis=0) - around).max())
    return d_cur < d_bg


@dataclass
class BackgroundModel:
    """Dual-background model for one camera. Not thread-safe: one caller at a time."""

    params: BackgroundParams = field(default_factory=BackgroundParams)
    _bg: FloatArray | None = None
    _prev: Image | None = None
    _static_since: npt.NDArray[np.float64] | None = None
    _samples: int = 0

    def prepare(self, image: Image) -> Prepared:
        """Downscale a sample and measure its change since the previous one (cheap)."""
        h, w = image.shape[:2]
        scale = min(1.0, self.params.width / w)
        if scale < 1.0:
            size = (round(w * scale), round(h * scale))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
        small = np.asarray(cv2.GaussianBlur(image, (5, 5), 0), np.uint8)
        if self._prev is None or self._prev.shape != small.shape:
            return Prepared(small, scale, 1.0)
        changed = float((_maxdiff(small, self._prev) > self.params.threshold).mean())
        return Prepared(small, scale, changed)

    def _empty(self, prep: Prepared) -> Foreground:
        none = np.zeros(prep.small.shape[:2], np.bool_)
        return Foreground(
            prep.scale, 0.0, 1.0, float(prep.small.mean()), (), (), (), none, none, none
        )

    def update(self, prep: Prepared, ts: float) -> Foreground:
        """Advance the model with a prepared sample."""
        p = self.params
        small = prep.small
        n_px = small.shape[0] * small.shape[1]
        if self._bg is None or self._prev is None or self._bg.shape[:2] != small.shape[:2]:
            self._bg = small.astype(np.float32)
            self._prev = small
            self._static_since = np.full(small.shape[:2], np.inf)
            self._samples = 1
            return self._empty(prep)
        assert self._static_since is not None
        self._samples += 1
        bg_u8 = np.asarray(cv2.convertScaleAbs(self._bg), np.uint8)
        changed = _maxdiff(small, self._prev) > p.threshold
        fg = _maxdiff(small, bg_u8) > p.threshold
        # Changed AND foreground: only where something is now, not where it was a sample ago
        # (that spot matches the background again).
        moving_core = (changed & fg).astype(np.uint8)
        moving = cv2.dilate(moving_core, _K5) > 0
        static = fg & ~moving
        # np.minimum keeps the first time a pixel became static
        self._static_since = np.where(static, np.minimum(self._static_since, ts), np.inf)
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
        moving_boxes = self._blobs(
            cv2.morphologyEx(moving_core, cv2.MORPH_CLOSE, _K3) > 0, n_px, prep.scale
        )
        old_static = np.asarray(
            cv2.morphologyEx(
                ((ts - self._static_since) >= p.min_static_s).astype(np.uint8),
                cv2.MORPH_OPEN,
                _K3,
            ),
            np.uint8,
        )
        still, removed = self._regions(old_static, small, bg_u8, n_px, prep.scale, warm)
        return Foreground(
            scale=prep.scale,
            motion=float(moving.mean()),
            changed=float(changed.mean()),
            brightness=float(small.mean()),
            moving_boxes=tuple(moving_boxes),
            still=tuple(still),
            removed=tuple(removed),
            fg=fg,
            moving=moving,
            static=static,
        )

    def relearn(self, box: Box, scale: float) -> None:
        """Take the still pixels now inside `box` (full-frame) as background: a region known
        not to be a thing (the place a person held when the model started)."""
        if self._bg is None or self._prev is None or self._static_since is None:
            return
        h, w = self._static_since.shape
        x1, y1 = max(0, math.floor(box.x1 * scale)), max(0, math.floor(box.y1 * scale))
        x2, y2 = min(w, math.ceil(box.x2 * scale)), min(h, math.ceil(box.y2 * scale))
        since = self._static_since[y1:y2, x1:x2]
        still = np.isfinite(since)
        self._bg[y1:y2, x1:x2][still] = self._prev[y1:y2, x1:x2][still]
        since[still] = np.inf

    def _blobs(self, mask: BoolArray, n_px: int, scale: float) -> list[tuple[Box, float]]:
        """Blob-like moving regions with their pixel area (full-frame pixels): big enough, and
        filling a fair part of their box, which people do and sweeping light bands, rain streaks
        and long shadows do not."""
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        out = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= self.params.min_area * n_px and area >= 0.5 * w * h:
                out.append((_to_full(x, y, w, h, scale), area / scale**2))
        return out

    def _regions(
        self,
        mask: npt.NDArray[np.uint8],
        small: Image,
        bg: Image,
        n_px: int,
        scale: float,
        warm: bool,
    ) -> tuple[list[StillRegion], list[StillRegion]]:
        """Static regions that could be objects: not tiny, not huge, not cut by the frame edge
        (a region at the border is something entering or leaving), split into arrivals and
        ghosts. A ghost is relearnt at once (at any size, anywhere) and reported as removed
        where it could be an object (not during warm-up, when every difference from the first
        frame is a start-up artefact)."""
        p = self.params
        assert self._static_since is not None
        assert self._bg is not None
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        hgt, wid = mask.shape
        still: list[StillRegion] = []
        removed: list[StillRegion] = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < p.min_area * n_px:
                continue
            region = labels == i
            since = float(self._static_since[region].min())
            box = _to_full(x, y, w, h, scale)
            sized = area <= p.max_area * n_px
            inside = not (x <= 1 or y <= 1 or x + w >= wid - 1 or y + h >= hgt - 1)
            if is_ghost(region, small, bg):
                # Relearnt wherever it is: a start-up ghost of someone who stood at the frame's
                # edge would otherwise stay foreground for good.
                self._static_since[region] = np.inf
                self._bg[region] = small[region]
                if sized and inside and not warm:
                    removed.append(StillRegion(box, since))
                continue
            if sized and inside:
                still.append(StillRegion(box, since))
        return still, removed


def _to_full(x: int, y: int, w: int, h: int, scale: float) -> Box:
    s = 1.0 / scale
    return Box(x * s, y * s, (x + w) * s, (y + h) * s)

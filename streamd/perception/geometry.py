"""Boxes and detections: the detector's output type, used by rules and snapshots."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from streamd.ingest.frame import Image


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in pixel coordinates of the frame it came from."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    @property
    def diagonal(self) -> float:
        return float(math.hypot(self.width, self.height))

    def distance(self, other: Box) -> float:
        """Centre-to-centre distance."""
        (ax, ay), (bx, by) = self.center, other.center
        return float(math.hypot(ax - bx, ay - by))

    def intersection(self, other: Box) -> float:
        """Area both boxes cover."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        return ix * iy

    def covered_by(self, other: Box) -> float:
        """Fraction of this box inside `other`."""
        area = self.area
        return self.intersection(other) / area if area > 0 else 0.0

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def gap(self, other: Box) -> float:
        """Edge-to-edge distance (0 when the boxes touch or overlap)."""
        dx = max(0.0, max(self.x1, other.x1) - min(self.x2, other.x2))
        dy = max(0.0, max(self.y1, other.y1) - min(self.y2, other.y2))
        return float((dx * dx + dy * dy) ** 0.5)

    def as_list(self) -> list[float]:
        return [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)]


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: COCO label, class id, confidence and box.

    `weak`: scored below the detector's threshold. Not an object on its own: only a candidate
    place for someone already tracked whom the detector just lost (a body on the floor, seen
    from an odd angle, scores low), in the second association step trackers such as ByteTrack
    use."""

    label: str
    class_id: int
    score: float
    box: Box
    weak: bool = False


class Detector(Protocol):
    """Anything that turns a BGR image into detections."""

    def detect(self, image: Image) -> list[Detection]: ...

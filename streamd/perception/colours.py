"""Dominant colour names of image regions, for captions ("red car", "person in black").

A region is shrunk to at most 24×24 pixels, each pixel is named in HSV (achromatic pixels by
brightness, chromatic ones by hue band) and the most frequent name wins. A dozen basic colour
terms is what people search with; finer names ("maroon") would only split the caption cache.
About 50 µs per region.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from streamd.ingest.frame import Image
from streamd.perception.geometry import Box

__all__ = ["COLOUR_NAMES", "dominant_colour", "person_colour"]

COLOUR_NAMES: tuple[str, ...] = (
    "black",
    "grey",
    "white",
    "red",
    "orange",
    "brown",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
)
_SIDE = 24
# OpenCV hue is 0-179. Upper bounds of each chromatic band, in order.
_HUE_BANDS: tuple[tuple[int, str], ...] = (
    (7, "red"),
    (20, "orange"),
    (33, "yellow"),
    (85, "green"),
    (130, "blue"),
    (150, "purple"),
    (170, "pink"),
    (180, "red"),
)
_HUE_LUT = np.empty(180, np.uint8)
_lo = 0
for _hi, _name in _HUE_BANDS:
    _HUE_LUT[_lo:_hi] = COLOUR_NAMES.index(_name)
    _lo = _hi
_BLACK, _GREY, _WHITE = 0, 1, 2
_BROWN = COLOUR_NAMES.index("brown")
_ORANGE = COLOUR_NAMES.index("orange")


def _names(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    h = hsv[..., 0].astype(np.intp)
    s = hsv[..., 1]
    v = hsv[..., 2]
    out = _HUE_LUT[np.minimum(h, 179)]
    # Dark orange reads as brown (wood, leather, cardboard); brown is a colour people name,
    # but not a hue band. Dark red stays red ("a dark red car" is searched as "red car").
    brownish = (out == _ORANGE) & (v < 160)
    out = np.where(brownish, np.uint8(_BROWN), out)
    achromatic = s < 45
    grey_level = np.where(v < 60, _BLACK, np.where(v > 185, _WHITE, _GREY)).astype(np.uint8)
    out = np.where(achromatic | (v < 45), grey_level, out)
    return np.asarray(out, np.uint8)


def _region(image: Image, box: Box, inset: tuple[float, float, float, float]) -> Image | None:
    """The part of `box` given by fractional insets (left, top, right, bottom) of its size."""
    h, w = image.shape[:2]
    bw, bh = box.width, box.height
    x1 = int(max(0.0, box.x1 + inset[0] * bw))
    y1 = int(max(0.0, box.y1 + inset[1] * bh))
    x2 = int(min(float(w), box.x2 - inset[2] * bw))
    y2 = int(min(float(h), box.y2 - inset[3] * bh))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    crop = image[y1:y2, x1:x2]
    ch, cw = crop.shape[:2]
    if max(ch, cw) > _SIDE:
        scale = _SIDE / max(ch, cw)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        crop = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), np.uint8)
    return crop


def _dominant(crop: Image | None) -> str | None:
    if crop is None or crop.size == 0:
        return None
    hsv = np.asarray(cv2.cvtColor(crop, cv2.COLOR_BGR2HSV), np.uint8)
    counts = np.bincount(_names(hsv).ravel(), minlength=len(COLOUR_NAMES))
    return COLOUR_NAMES[int(np.argmax(counts))]


def dominant_colour(image: Image, box: Box) -> str | None:
    """The most common colour name in the middle of `box` (its inner 60 %, which is mostly
    the object and not the background around it); None for a degenerate box."""
    return _dominant(_region(image, box, (0.2, 0.2, 0.2, 0.2)))


def person_colour(image: Image, box: Box) -> str | None:
    """A person's clothing colour: the torso (below the head, above the legs, central half)."""
    return _dominant(_region(image, box, (0.25, 0.2, 0.25, 0.45)))

"""Short factual captions for object and scene tokens ("red car, stationary 40 s, right side").

Captions are what the objects encoder embeds, and each distinct caption is embedded once, so
every part is quantised to a few values: nine positions, a dozen colours, stationary times in
steps that grow with the duration. Words are chosen for how a sentence embedding reads them:
no negations ("no people" sits close to "people"), and "person in black" rather than
"black person".
"""

from __future__ import annotations

from collections import Counter

from streamd.perception.geometry import Box

__all__ = [
    "MOVING_THING",
    "object_caption",
    "plural",
    "position",
    "scene_caption",
    "still_phrase",
    "unidentified_caption",
]

# What a moving region is when the detector cannot say (or says something that cannot move by
# itself): listing the usual candidates keeps "a car" or "a person" able to find it, and the
# encoder gives these tokens less weight than a confident detection.
MOVING_THING = "moving object, maybe a vehicle, person or animal"
STILL_THING = "unidentified object"

_SECONDS = (5, 10, 15, 20, 30, 40, 50)
_MINUTES = (1, 2, 3, 4, 5, 10, 15, 20, 30, 45)
_HOURS = (1, 2, 3, 4, 6, 8, 12, 18)
_DARK = 50.0  # mean brightness (0-255) below which a scene is called dark
_MANY = 5
_MAX_GROUPS = 3
_IRREGULAR = {"person": "people", "bus": "buses", "skis": "skis", "mouse": "mice"}


def position(box: Box, width: int, height: int) -> str:
    """Where the box's centre is, in thirds of the frame: "top left" … "bottom right"."""
    cx, cy = box.center
    col = min(2, max(0, int(3 * cx / max(width, 1))))
    row = min(2, max(0, int(3 * cy / max(height, 1))))
    horizontal = ("left", "", "right")[col]
    if row == 1:
        return {0: "left side", 1: "center", 2: "right side"}[col]
    vertical = ("top", "", "bottom")[row]
    return f"{vertical} {horizontal}".strip()


def _floor(value: float, steps: tuple[int, ...]) -> int | None:
    best = None
    for step in steps:
        if value >= step:
            best = step
    return best


def still_phrase(seconds: float) -> str:
    """ "stationary", "stationary 40 s", "stationary 3 min", "stationary 2 h" (rounded down)."""
    if seconds < _SECONDS[0]:
        return "stationary"
    if seconds < 60:
        return f"stationary {_floor(seconds, _SECONDS)} s"
    if seconds < 3600:
        return f"stationary {_floor(seconds / 60, _MINUTES)} min"
    if seconds < 86400:
        return f"stationary {_floor(seconds / 3600, _HOURS)} h"
    return f"stationary {int(seconds // 86400)} d"


def _state(moving: bool, still_s: float) -> str:
    return "moving" if moving else still_phrase(still_s)


def object_caption(label: str, colour: str | None, moving: bool, still_s: float, where: str) -> str:
    """An identified object: "red car, stationary 40 s, right side", "person in black, …"."""
    if label == "person":
        name = f"person in {colour}" if colour else "person"
    else:
        name = f"{colour} {label}" if colour else label
    return f"{name}, {_state(moving, still_s)}, {where}"


def unidentified_caption(colour: str | None, moving: bool, still_s: float, where: str) -> str:
    """Something the detector could not (plausibly) name: a moving blob or a still region."""
    if moving:
        thing = f"{colour} {MOVING_THING}" if colour else MOVING_THING
        return f"{thing}, {where}"
    thing = f"{colour} {STILL_THING}" if colour else STILL_THING
    return f"{thing}, {still_phrase(still_s)}, {where}"


def plural(label: str, n: int) -> str:
    if n == 1:
        return label
    if label in _IRREGULAR:
        return _IRREGULAR[label]
    if label.endswith(("s", "sh", "ch", "x")):
        return f"{label}es"
    return f"{label}s"


def scene_caption(counts: Counter[str], brightness: float) -> str:
    """One line for the whole frame: "scene: 2 people, 1 car", "empty scene", "dark …"."""
    groups = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_MAX_GROUPS]
    dark = "dark " if brightness < _DARK else ""
    if not groups:
        return f"{dark}empty scene"
    parts = [
        f"many {plural(label, 2)}" if n >= _MANY else f"{n} {plural(label, n)}"
        for label, n in groups
    ]
    return f"{dark}scene: " + ", ".join(parts)

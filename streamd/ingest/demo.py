"""A generated demo camera: someone walks in with a bag, leaves it, and comes back for it.

`streamd run` with no config analyses this scene so a new user sees the whole path (frames →
rule → event → SQL/MQTT) work within a minute, with no camera and no video file.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import cv2
import numpy as np

from streamd.ingest.frame import Frame
from streamd.ingest.slot import LatestSlot

if TYPE_CHECKING:
    from streamd.ingest.source import SourceStats

WIDTH, HEIGHT, FPS = 640, 360, 10
CYCLE_S = 60.0
DROP_T, LEAVE_T, RETURN_T, PICKUP_T = 5.0, 12.0, 38.0, 44.0
BAG_X = 300
_FLOOR_Y = 250


def _background(rng: np.random.Generator) -> np.ndarray:
    img = np.full((HEIGHT, WIDTH, 3), (112, 112, 112), np.uint8)
    img[:_FLOOR_Y] = (150, 140, 130)
    cv2.rectangle(img, (40, 120), (160, 250), (60, 80, 100), -1)  # a cabinet
    cv2.rectangle(img, (480, 60), (600, 160), (200, 200, 210), -1)  # a window
    texture = rng.normal(0, 6, img.shape).astype(np.int16)
    out: np.ndarray = np.clip(img.astype(np.int16) + texture, 0, 255).astype(np.uint8)
    return out


def render(t: float, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scene at `t` seconds into the cycle."""
    img = background.copy()
    t = t % CYCLE_S
    person_x: float | None = None
    carrying = False
    if t < LEAVE_T:
        person_x = -40 + t * 55  # walks left to right
        carrying = t < DROP_T
    elif RETURN_T <= t < RETURN_T + 14:
        person_x = WIDTH - (t - RETURN_T) * 55  # walks back right to left
        carrying = t >= PICKUP_T
    bag_visible = DROP_T <= t < PICKUP_T
    if bag_visible:
        cv2.rectangle(img, (BAG_X, _FLOOR_Y + 60), (BAG_X + 30, _FLOOR_Y + 82), (19, 69, 139), -1)
    if person_x is not None:
        x = int(person_x)
        cv2.rectangle(img, (x, _FLOOR_Y - 30), (x + 40, _FLOOR_Y + 80), (160, 64, 32), -1)
        cv2.circle(img, (x + 20, _FLOOR_Y - 45), 15, (120, 150, 200), -1)
        if carrying:
            bx = x + 30
            cv2.rectangle(img, (bx, _FLOOR_Y + 60), (bx + 30, _FLOOR_Y + 82), (19, 69, 139), -1)
    noise = rng.normal(0, 2, img.shape).astype(np.int16)
    out: np.ndarray = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    cv2.putText(out, f"streamd demo {stamp}", (10, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255,) * 3)
    return out


def demo_session(
    camera: str,
    fps: float,
    slot: LatestSlot[Frame],
    stop: threading.Event,
    stats: SourceStats,
    seq: int,
) -> int:
    """Produce frames at the analysis rate until stopped (the scene is cheap to draw)."""
    rng = np.random.default_rng(7)
    stats.sessions += 1
    background = _background(rng)
    start = time.time()
    period = 1.0 / fps
    while not stop.is_set():
        now = time.time()
        image = render(now - start, background, rng)
        slot.put(Frame(camera, image, now, now - start, seq))
        stats.decoded += 1
        stats.sampled += 1
        stats.last_frame_at = now
        stats.width, stats.height = WIDTH, HEIGHT
        seq += 1
        if stop.wait(max(0.0, period - (time.time() - now))):
            break
    return seq

"""Event snapshots: the opening frame with its boxes drawn, as a JPEG on disk.

Blocking (OpenCV encode + file I/O): call from a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import cv2
import numpy as np

from streamd.events.change import Snapshot
from streamd.ingest.frame import Image

JPEG_QUALITY = 85
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BOX_COLOR = (0, 0, 255)  # BGR red: visible on most scenes
_TEXT_COLOR = (255, 255, 255)


def snapshot_relpath(camera: str, event_id: str) -> Path:
    """Where an event's snapshot lives, relative to the snapshot directory."""
    for what, name in (("camera", camera), ("event id", event_id)):
        # Both end up in a file path: refuse anything that could climb out of the directory.
        if not _SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"unsafe {what} for a snapshot path: {name!r}")
    return Path(camera) / f"{event_id}.jpg"


def render_snapshot(snapshot: Snapshot) -> Image:
    """A copy of the snapshot's image with each (label, box) drawn on it."""
    image = np.ascontiguousarray(snapshot.image).copy()
    height, width = image.shape[:2]
    # Scale line width and text with the frame so they stay legible from 320p to 4K.
    thickness = max(1, round(min(width, height) / 240))
    font_scale = max(0.4, min(width, height) / 900)
    for label, box in snapshot.boxes:
        x1 = int(np.clip(round(box.x1), 0, width - 1))
        y1 = int(np.clip(round(box.y1), 0, height - 1))
        x2 = int(np.clip(round(box.x2), 0, width - 1))
        y2 = int(np.clip(round(box.y2), 0, height - 1))
        cv2.rectangle(image, (x1, y1), (x2, y2), _BOX_COLOR, thickness)
        if not label:
            continue
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        # Label on a filled strip above the box, or inside it when the box touches the top edge.
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
        cv2.rectangle(image, (x1, top), (x1 + tw + 4, top + th + baseline + 2), _BOX_COLOR, -1)
        cv2.putText(
            image,
            label,
            (x1 + 2, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            _TEXT_COLOR,
            1,
            cv2.LINE_AA,
        )
    return image


def write_snapshot(snapshot: Snapshot, directory: Path, event_id: str, camera: str) -> Path:
    """Draw the boxes, encode a JPEG (quality 85) and write it to directory/camera/<id>.jpg.

    The file appears atomically (temporary file + os.replace), so the HTTP API never serves half a
    JPEG. Returns the file's path.
    """
    target = directory / snapshot_relpath(camera, event_id)
    image = render_snapshot(snapshot)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"OpenCV could not encode the snapshot of event {event_id} as JPEG")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{event_id}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a snapshot is no more private than the event log that names it.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(encoded.tobytes())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return target

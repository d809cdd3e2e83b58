"""Small JPEG thumbnails of tokenised frames: the snapshots that search results point at.

One file per frame that produced tokens, named by its frame id (epoch milliseconds), in one
directory per hour (`<hour>/<frame id>.jpg`) so that eviction removes whole directories and no
directory grows past a few thousand files. Files are written to a temporary name and renamed,
so a crash never leaves a half-written JPEG under a real name. Nothing is held in memory but
per-hour byte counts; eviction follows the token window (`evict_before` the oldest live frame).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from streamd.ingest.frame import Image

__all__ = ["Thumbnails"]

log = logging.getLogger(__name__)

_HOUR_MS = 3_600_000


class Thumbnails:
    """Not thread-safe for writers (one per camera); `path` may be called from any thread."""

    def __init__(self, directory: Path, width: int = 320, quality: int = 75) -> None:
        self.directory = directory
        self.width = width
        self.quality = quality
        self._bytes: dict[int, int] = {}  # hour → bytes of its files
        self.errors = 0
        if width > 0:
            directory.mkdir(parents=True, exist_ok=True)
            self._scan()

    @property
    def enabled(self) -> bool:
        return self.width > 0

    def _scan(self) -> None:
        for entry in os.scandir(self.directory):
            if not entry.is_dir() or not entry.name.isdigit():
                continue
            total = 0
            for f in os.scandir(entry.path):
                if f.name.endswith(".tmp"):
                    Path(f.path).unlink(missing_ok=True)  # an unfinished write before a crash
                    continue
                total += f.stat().st_size
            self._bytes[int(entry.name)] = total

    @property
    def nbytes(self) -> int:
        return sum(self._bytes.values())

    def path(self, frame_id: int) -> Path:
        return self.directory / str(frame_id // _HOUR_MS) / f"{frame_id}.jpg"

    def save(self, frame_id: int, image: Image) -> None:
        """Write the thumbnail of one frame (errors are logged and counted, never raised)."""
        if not self.enabled:
            return
        h, w = image.shape[:2]
        if w > self.width:
            size = (self.width, max(1, round(h * self.width / w)))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        path = self.path(frame_id)
        tmp = path.with_name(path.name + ".tmp")
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            path.parent.mkdir(exist_ok=True)
            tmp.write_bytes(data.tobytes())
            os.replace(tmp, path)
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("cannot write search thumbnail %s: %s", path, exc)
            return
        hour = frame_id // _HOUR_MS
        self._bytes[hour] = self._bytes.get(hour, 0) + len(data)

    def evict_before(self, frame_id: int) -> None:
        """Delete the thumbnails of frames older than `frame_id` (the oldest live frame)."""
        if not self.enabled:
            return
        boundary = frame_id // _HOUR_MS
        for hour in sorted(h for h in self._bytes if h < boundary):
            shutil.rmtree(self.directory / str(hour), ignore_errors=True)
            del self._bytes[hour]
        if boundary not in self._bytes:
            return
        folder = self.directory / str(boundary)
        freed = 0
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            stem = entry.name.partition(".")[0]
            if stem.isdigit() and int(stem) < frame_id:
                try:
                    freed += entry.stat().st_size
                    os.unlink(entry.path)
                except OSError:
                    continue
        self._bytes[boundary] = max(0, self._bytes[boundary] - freed)

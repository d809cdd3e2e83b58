"""The one frame type every stage after a source sees."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import av

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: BGR pixels plus when it was received (UTC epoch s) and its stream PTS."""

    camera: str
    image: Image
    received_at: float
    pts: float | None
    seq: int

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @classmethod
    def from_pyav(
        cls, camera: str, frame: av.VideoFrame, seq: int, received_at: float | None = None
    ) -> Frame:
        pts = float(frame.time) if frame.time is not None else None
        image: Any = frame.to_ndarray(format="bgr24")
        return cls(
            camera=camera,
            image=image,
            received_at=time.time() if received_at is None else received_at,
            pts=pts,
            seq=seq,
        )

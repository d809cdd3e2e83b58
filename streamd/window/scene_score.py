"""How well a camera's latest window tokens match a piece of text: the evidence behind scene
predicates ("smoke or fire", "someone rings the doorbell") that nothing structured covers.

The rules stage asks this for candidates only; a VLM verifier decides. The tokens are the last
frame the window's encoder finished (it runs off the alert path, so it may be a frame or two
behind), scored with the encoder's own text embedding: image tokens for CLIP/SigLIP, caption
tokens for the offline objects encoder.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamd.window.camera_window import CameraWindow

__all__ = ["WindowSceneScorer"]


class WindowSceneScorer:
    """`score(text)` → (best token similarity, frame time) of the latest encoded frame."""

    def __init__(self, window: CameraWindow) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._embed = lru_cache(maxsize=64)(window.backend.embed_text)

    def score(self, text: str) -> tuple[float, float] | None:
        latest = self.window.latest
        if latest is None:
            return None
        ts, vectors = latest
        if not len(vectors):
            return None
        with self._lock:  # the backend's text model is shared by every camera's window
            query = self._embed(text)
        return float(np.max(vectors @ query)), ts

"""One camera's window: encoder → TokenStore (+ thumbnails), the pipeline's `WindowWriter`.

Lives in `<data_dir>/window/<camera>/`: the store's manifest and segment files, plus
`thumbs/` (see `thumbs`). The store seals a segment when it is full; this class also seals it
when it is `flush_s` old and holds at least `flush_min_tokens` tokens, so a crash (kill -9)
loses at most that much, and at shutdown (`close`). A restart resumes every sealed segment.

A window problem never stops a camera: the pipeline feeds rules from the same frames, so an
encoder or disk error is logged (rate-limited), counted in `describe()` and the frame skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamd.perception.world import WorldState
from streamd.window.encoders import EncoderBackend, FrameEncoder
from streamd.window.moments import Moment
from streamd.window.query import iso
from streamd.window.store import TokenStore, WindowError
from streamd.window.thumbs import Thumbnails

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from streamd.config import WindowConfig

__all__ = ["CameraWindow", "StoreView", "open_store", "window_dir"]

log = logging.getLogger(__name__)

_EVICT_EVERY = 64  # frames between thumbnail eviction passes


def window_dir(data_dir: Path, camera: str) -> Path:
    return data_dir / "window" / camera


def open_store(
    directory: Path, camera: str, backend: EncoderBackend, budget: int, cfg: WindowConfig
) -> TokenStore:
    """The TokenStore of one camera's window with the configured knobs."""
    return TokenStore(
        directory,
        backend.dim,
        budget=budget,
        max_age_s=cfg.max_age_s,
        segment_tokens=cfg.segment_tokens,
        encoder=backend.name,
        camera=camera,
        hit_margin=backend.hit_margin if cfg.hit_margin is None else cfg.hit_margin,
        merge_gap_s=cfg.merge_gap_s,
    )


class StoreView:
    """The read side of a window: search, snapshots and frame times over a store + thumbnails.

    Shared by the live CameraWindow and the CLI's read-only PersistedWindow.
    """

    store: TokenStore
    thumbs: Thumbnails

    def search(
        self,
        query: npt.NDArray[np.float32],
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[Moment]:
        return self.store.search(query, since, until, limit, min_score)

    def snapshot_path(self, frame_id: int) -> Path | None:
        path = self.thumbs.path(frame_id)
        return path if path.is_file() else None

    def timestamps(self) -> npt.NDArray[np.float64]:
        return self.store.timestamps()


class CameraWindow(StoreView):
    """`add` is called by the camera's pipeline (one worker thread at a time); `search`,
    `describe` and `snapshot_path` from any thread."""

    def __init__(
        self,
        camera: str,
        directory: Path,
        backend: EncoderBackend,
        budget: int,
        cfg: WindowConfig,
        encoder: FrameEncoder | None = None,
    ) -> None:
        self.camera = camera
        self.directory = directory
        self.backend = backend
        self.encoder = encoder if encoder is not None else backend.for_camera(camera)
        self.cfg = cfg
        self.store = open_store(directory, camera, backend, budget, cfg)
        self.thumbs = Thumbnails(directory / "thumbs", cfg.thumbnail_width, cfg.thumbnail_quality)
        self._lock = threading.Lock()  # add / flush / close
        self._last_id = -1
        self._last_ts = -float("inf")
        span = self.store.span()
        if span is not None:
            self._last_ts = span[1]
            self._last_id = self.frame_id(span[1])
        # Mirrors the store's active segment, which always starts empty on open.
        self._active_tokens = 0
        self._active_since: float | None = None
        self._adds = 0
        self.frames_encoded = 0
        self.encode_s = 0.0
        self.errors = 0
        self.skipped_out_of_order = 0
        # The last encoded frame's time and token vectors (scene predicates score against it).
        self.latest: tuple[float, np.ndarray] | None = None

    @staticmethod
    def frame_id(ts: float) -> int:
        """A frame's id: its time in epoch milliseconds (unique and stable across restarts)."""
        return round(ts * 1000)

    # -- writing (WindowWriter) ------------------------------------------------------------

    def add(self, obs: WorldState) -> None:
        """Encode one observation and append its tokens (gated frames add none)."""
        with self._lock:
            try:
                self._add(obs)
            except Exception as exc:  # the camera's rules must keep running whatever happens
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning(
                        "camera %s: token window skipped a frame (%d so far): %s",
                        self.camera,
                        self.errors,
                        exc,
                        exc_info=not isinstance(exc, WindowError),
                    )

    def _add(self, obs: WorldState) -> None:
        if obs.ts < self._last_ts:
            # The wall clock stepped back (NTP): the window's time index must stay ordered.
            self.skipped_out_of_order += 1
            return
        t0 = time.perf_counter()
        batch = self.encoder.encode(obs)
        if not len(batch):
            return
        self.encode_s += time.perf_counter() - t0
        self.frames_encoded += 1
        frame_id = max(self.frame_id(obs.ts), self._last_id + 1)
        self.store.append(obs.ts, frame_id, batch)
        self.latest = (obs.ts, batch.vectors)
        self._last_id, self._last_ts = frame_id, obs.ts
        self.thumbs.save(frame_id, obs.frame.image)
        if self._active_since is None:
            self._active_since = obs.ts
        self._active_tokens += len(batch)
        if self._active_tokens >= self.store.segment_tokens:
            self._active_tokens, self._active_since = 0, None  # the store sealed it
        elif (
            self._active_tokens >= self.cfg.flush_min_tokens
            and obs.ts - self._active_since >= self.cfg.flush_s
        ):
            self._flush_locked()
        self._adds += 1
        if self._adds % _EVICT_EVERY == 0:
            self._evict_thumbs()

    def _flush_locked(self) -> None:
        self._active_tokens, self._active_since = 0, None
        self.store.flush()
        self._evict_thumbs()

    def _evict_thumbs(self) -> None:
        span = self.store.span()
        if span is not None:
            self.thumbs.evict_before(self.frame_id(span[0]))

    def flush(self) -> None:
        """Seal the active segment now."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Seal what is pending and release the store (idempotent)."""
        with self._lock:
            self._active_tokens, self._active_since = 0, None
            self.store.close()

    # -- reading ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        stats = self.store.stats()
        span = self.store.span()
        thumbs = self.thumbs.nbytes
        return {
            "encoder": self.backend.name,
            "kind": self.backend.kind,
            "dim": self.store.dim,
            "budget": self.store.budget,
            "tokens": stats.tokens,
            "frames": stats.frames,
            "tokens_per_frame": round(stats.tokens / stats.frames, 2) if stats.frames else None,
            "span": None
            if span is None
            else {
                "start": span[0],
                "end": span[1],
                "start_iso": iso(span[0]),
                "end_iso": iso(span[1]),
                "seconds": round(span[1] - span[0], 3),
            },
            "ram_bytes": stats.nbytes,
            "disk_bytes": stats.disk_bytes + thumbs,
            "thumbnail_bytes": thumbs,
            "segment_files": stats.segment_files,
            "unsealed_tokens": self._active_tokens,
            "frames_encoded": self.frames_encoded,
            "encode_ms_per_frame": round(1000 * self.encode_s / self.frames_encoded, 2)
            if self.frames_encoded
            else None,
            "errors": self.errors,
            **self.backend.stats(),
        }

"""The daemon's windows: one encoder backend, one `CameraWindow` per camera, one search."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamd.window.camera_window import CameraWindow, window_dir
from streamd.window.encoders import EncoderBackend, load_backend
from streamd.window.search import WindowSearch

if TYPE_CHECKING:
    from streamd.config import Config

__all__ = ["WindowSet", "open_windows"]

log = logging.getLogger(__name__)


@dataclass
class WindowSet:
    backend: EncoderBackend
    windows: dict[str, CameraWindow]
    search: WindowSearch

    def metrics(self) -> list[str]:
        """Prometheus lines for /metrics."""
        lines: list[str] = []
        for name, window in self.windows.items():
            stats = window.store.stats()
            lbl = f'camera="{name}"'
            lines += [
                f"streamd_window_tokens{{{lbl}}} {stats.tokens}",
                f"streamd_window_frames{{{lbl}}} {stats.frames}",
                f"streamd_window_budget_tokens{{{lbl}}} {window.store.budget}",
                f"streamd_window_ram_bytes{{{lbl}}} {stats.nbytes}",
                f"streamd_window_disk_bytes{{{lbl}}} {stats.disk_bytes + window.thumbs.nbytes}",
                f"streamd_window_errors_total{{{lbl}}} {window.errors}",
            ]
        return lines

    def close(self) -> None:
        """Seal and release every window (blocking: writes the active segments)."""
        for name, window in self.windows.items():
            try:
                window.close()
            except Exception:
                log.exception("camera %s: closing the token window failed", name)


def open_windows(cfg: Config, cameras: Iterable[str]) -> WindowSet | None:
    """Load the encoder and open (resume) each camera's window; None when disabled.

    Blocking (model load, segment files): call from a thread.
    """
    names = list(cameras)
    if not cfg.window.enabled or not names:
        return None
    t0 = time.perf_counter()
    backend = load_backend(cfg.window)
    t1 = time.perf_counter()
    windows: dict[str, CameraWindow] = {}
    for name in names:
        try:
            windows[name] = CameraWindow(
                name,
                window_dir(cfg.data_dir, name),
                backend,
                cfg.cameras[name].window_tokens,
                cfg.window,
            )
        except Exception as exc:  # one camera's broken window must not stop the daemon
            log.error(
                "camera %s: token window disabled (%s: %s); its alerts run as usual — move "
                "%s aside to start a fresh window",
                name,
                type(exc).__name__,
                exc,
                window_dir(cfg.data_dir, name),
            )
    log.info(
        "token windows: encoder %s (dim %d) loaded in %.1f s; %s opened in %.2f s",
        backend.name,
        backend.dim,
        t1 - t0,
        ", ".join(f"{n}={len(w.store)} tokens" for n, w in windows.items()),
        time.perf_counter() - t1,
    )
    return WindowSet(backend, windows, WindowSearch(backend, windows))

"""Search across cameras' windows: live (inside the daemon) or from the persisted segments.

`WindowSearch.search` embeds the text once with the encoder backend, searches every selected
window and merges the moments by score. The daemon builds one over its live `CameraWindow`s
(the API's `GET /api/search`); `open_persisted` builds one over the files on disk for
`streamd search` when no daemon answers.

Reading a window that a daemon may be writing. `TokenStore` is a writer: opening a directory
deletes unfinished `.tmp` files and segments it would evict, and writes the manifest. Opening
the live directory from a second process could therefore delete a segment the daemon is
writing at that moment. Instead, `open_persisted` makes a private snapshot: it hard-links
every complete segment file (`seg-*.seg`, published by an atomic rename, never modified
afterwards) into `<data_dir>/window/.readers/<pid>-<random>/<camera>/` and opens the store
there. Whatever that store deletes or writes is its own links; the daemon's eviction unlinking
a segment leaves the reader's link (and its data) valid until the reader is done. Segments are
mapped copy-on-write, so nothing is ever written back into a shared file. The snapshot holds
what was sealed when the search started; the daemon's unsealed active segment (at most
`window.flush_s` old) is only visible through the daemon's API, which `streamd search` asks
first. Snapshot directories of readers that died are removed by the next reader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from streamd.errors import ConfigError
from streamd.window.camera_window import StoreView, open_store, window_dir
from streamd.window.encoders import EncoderBackend
from streamd.window.moments import Moment
from streamd.window.query import (
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    SearchResult,
    UnknownCameraError,
    moment_json,
    result_json,
    validate,
)
from streamd.window.store import MANIFEST, TokenStore, WindowError
from streamd.window.thumbs import Thumbnails

if TYPE_CHECKING:
    from streamd.config import Config

__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "SearchResult",
    "UnknownCameraError",
    "WindowSearch",
    "moment_json",
    "open_persisted",
    "result_json",
    "validate",
]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
_READERS = ".readers"
# Longest stretch without tokenised frames that still joins two moments (see join_static_gaps).
STATIC_GAP_MAX_S = 300.0


class SearchableWindow(Protocol):
    camera: str

    def timestamps(self) -> F64:
        """Times of the window's tokenised frames, oldest first."""
        ...

    def search(
        self,
        query: F32,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[Moment]: ...

    def snapshot_path(self, frame_id: int) -> Path | None: ...


def join_static_gaps(moments: list[Moment], frame_ts: F64, max_gap_s: float) -> list[Moment]:
    """Join moments of one camera that are the same tracked object with nothing in between.

    Frames the analyser gates as unchanged add no tokens, so a person standing still for a
    minute leaves a stretch without frames between two hitting frames, and the store's
    time-based merge splits one visit into several moments. Two moments are joined when their
    best tokens are the same track (the tracker follows objects through gated frames) and no
    tokenised frame lies between them, within `max_gap_s` (beyond it the camera may have been
    offline). The track condition matters: a car that leaves the frame may leave too little
    change behind to be analysed, and the next car must not be joined to it.
    """
    if len(moments) < 2:
        return moments
    ordered = sorted(moments, key=lambda m: m.start)
    out = [ordered[0]]
    for m in ordered[1:]:
        prev = out[-1]
        between = int(np.searchsorted(frame_ts, m.start, "left")) - int(
            np.searchsorted(frame_ts, prev.end, "right")
        )
        same = prev.track_id >= 0 and prev.track_id == m.track_id
        if same and between <= 0 and m.start - prev.end <= max_gap_s:
            best = prev if prev.score >= m.score else m
            out[-1] = dataclasses.replace(
                best, start=prev.start, end=max(prev.end, m.end), hits=prev.hits + m.hits
            )
        else:
            out.append(m)
    return out


class WindowSearch:
    """Text search over a set of windows that share one encoder backend."""

    def __init__(self, backend: EncoderBackend, windows: Mapping[str, SearchableWindow]) -> None:
        self.backend = backend
        self.windows = dict(windows)

    def search(
        self,
        text: str,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        min_score: float | None = None,
    ) -> SearchResult:
        """Blocking (model + numpy): call from a worker thread in async code."""
        q = validate(text, since, until, limit)
        if camera is not None and camera not in self.windows:
            known = ", ".join(sorted(self.windows)) or "none"
            raise UnknownCameraError(f"unknown camera {camera!r} (cameras with a window: {known})")
        selected = [camera] if camera is not None else sorted(self.windows)
        t0 = time.perf_counter()
        vector = self.backend.embed_text(q)
        t1 = time.perf_counter()
        moments: list[Moment] = []
        for name in selected:
            window = self.windows[name]
            try:
                # More than `limit` per camera: joining across static gaps may merge some.
                found = window.search(vector, since, until, 2 * limit, min_score)
                moments += join_static_gaps(found, window.timestamps(), STATIC_GAP_MAX_S)
            except WindowError as exc:  # e.g. closed during shutdown
                log.warning("search skipped camera %s: %s", name, exc)
        moments.sort(key=lambda m: -m.score)
        t2 = time.perf_counter()
        return SearchResult(q, moments[:limit], selected, 1000 * (t1 - t0), 1000 * (t2 - t1))

    def snapshot_path(self, camera: str, frame_id: int) -> Path | None:
        window = self.windows.get(camera)
        if window is None:
            raise UnknownCameraError(f"unknown camera {camera!r}")
        return window.snapshot_path(frame_id)


# -- the persisted window ---------------------------------------------------------------------


@dataclass
class PersistedWindow(StoreView):
    """A read-only view of one camera's sealed segments (see the module doc)."""

    camera: str
    store: TokenStore
    thumbs: Thumbnails


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_readers(readers: Path) -> None:
    if not readers.is_dir():
        return
    for entry in readers.iterdir():
        pid = entry.name.partition("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _snapshot(source: Path, target: Path) -> None:
    """Hard-link the manifest's copy and every sealed segment of `source` into `target`."""
    target.mkdir()
    shutil.copyfile(source / MANIFEST, target / MANIFEST)
    for path in source.iterdir():
        if not (path.name.startswith("seg-") and path.name.endswith(".seg")):
            continue
        try:
            os.link(path, target / path.name)
        except FileNotFoundError:
            continue  # evicted by the daemon meanwhile
        except OSError:
            # No hard links here (another file system for .readers, or a file system without
            # them): a copy is slower but just as safe.
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(path, target / path.name)


def _manifest_encoder(directory: Path) -> tuple[str, int]:
    import json

    try:
        doc = json.loads((directory / MANIFEST).read_text())
        return str(doc["encoder"]), int(doc["dim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WindowError(f"token window manifest in {directory} is unreadable: {exc}") from exc


@contextlib.contextmanager
def open_persisted(
    cfg: Config, backend: EncoderBackend, camera: str | None = None
) -> Iterator[WindowSearch]:
    """A WindowSearch over the sealed segments on disk, safe while a daemon writes them."""
    root = cfg.data_dir / "window"
    if camera is not None and camera not in cfg.cameras:
        known = ", ".join(sorted(cfg.cameras)) or "none"
        raise UnknownCameraError(f"unknown camera {camera!r} (configured: {known})")
    names = [camera] if camera is not None else sorted(cfg.cameras)
    readers = root / _READERS
    _remove_dead_readers(readers)
    private = readers / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        private.mkdir(parents=True)
    except OSError as exc:
        # e.g. the daemon's data directory belongs to its service user: snapshot into a
        # temporary directory instead (copies, as hard links cannot cross file systems).
        private = Path(tempfile.mkdtemp(prefix="streamd-search-"))
        log.info("cannot write %s (%s); reading the window through %s", readers, exc, private)
    windows: dict[str, SearchableWindow] = {}
    stores: list[TokenStore] = []
    try:
        for name in names:
            source = window_dir(cfg.data_dir, name)
            if not (source / MANIFEST).is_file():
                # Nothing persisted yet: an empty window, not an error.
                log.info("camera %s has no persisted window yet (%s)", name, source)
                continue
            encoder, _ = _manifest_encoder(source)
            if encoder != backend.name:
                raise ConfigError(
                    f"the window of camera {name} in {source} holds {encoder!r} tokens but "
                    f"the config's encoder is {backend.name!r}: search it with the config it "
                    "was written with"
                )
            _snapshot(source, private / name)
            store = open_store(
                private / name, name, backend, cfg.cameras[name].window_tokens, cfg.window
            )
            stores.append(store)
            windows[name] = PersistedWindow(name, store, Thumbnails(source / "thumbs", 0))
        if camera is not None and camera not in windows:
            windows[camera] = _EmptyWindow(camera)
        yield WindowSearch(backend, windows)
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(private, ignore_errors=True)


@dataclass
class _EmptyWindow:
    camera: str

    def search(
        self,
        query: F32,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[Moment]:
        return []

    def snapshot_path(self, frame_id: int) -> Path | None:
        return None

    def timestamps(self) -> F64:
        return np.empty(0, np.float64)

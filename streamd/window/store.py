"""Per-camera rolling window of visual tokens: compact in RAM, persistent on disk, searchable.

Layout. Tokens live in *segments* of about `segment_tokens` tokens, oldest first. Each segment
holds columns (one numpy array per field, no Python object per token), a frame index (ts,
frame id, first token, token count; a frame's tokens are contiguous and never split across
segments) and its own `VectorTable` of int8 rows, deduplicated by key within the segment. Only
the newest (active) segment is in ordinary memory; when it reaches `segment_tokens` it is
written as one checksummed file and mapped back (see `segfile`). Because a segment's tokens
only reference its own rows, dropping a segment frees its dense vectors with it, and each file
can be loaded (or found corrupt) on its own.

Deduplicated captions. Captions recur across segments for hours ("person, walking, left"), so
the store also keeps `SharedVectors`: every distinct key of the live window once, and for each
segment a row map from its rows to the shared ones. Searching a segment whose rows all have
keys gathers from one scoring of the shared table; a segment with key-less (dense) rows is
scored on its own rows. Both give the same numbers: a shared row is the same int8 vector.

Eviction works on whole frames, oldest first, to keep `len(store) <= budget` and every frame
within `max_age_s` of the newest one. A partly evicted segment is masked by its first live
frame; a fully evicted one is dropped and its file deleted. Memory therefore stays within one
segment of the budget whatever runs through the store.

Concurrency. One writer appends; any thread may search. A search takes the lock only to copy
references to the arrays it needs: columns only ever grow into fresh arrays and rows below a
published count never change, so the scoring itself runs unlocked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch

from streamd.errors import StreamdError
from streamd.window.moments import Moment, find_runs
from streamd.window.segfile import (
    CorruptSegmentError,
    SegmentHeader,
    load_segment,
    read_header,
    write_segment,
)
from streamd.window.vectors import (
    Query,
    SharedVectors,
    StringColumn,
    VectorTable,
    int8_scores,
    quantise,
)

__all__ = ["Moment", "TokenBatch", "TokenKind", "TokenStore", "WindowError", "WindowStats"]

log = logging.getLogger(__name__)

F16 = npt.NDArray[np.float16]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_SEGMENT_NAME = re.compile(r"^seg-(\d{10})\.seg$")

# What a segment file must contain, and as what. Anything else in a file is ignored.
_SCHEMA: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in (
        ("ts", "<f8"),
        ("frame_id", "<i8"),
        ("kind", "|u1"),
        ("class_id", "<i2"),
        ("box", "<f2"),
        ("score", "<f4"),
        ("track_id", "<i4"),
        ("vec_row", "<i4"),
        ("f_ts", "<f8"),
        ("f_id", "<i8"),
        ("f_start", "<i4"),
        ("f_count", "<i4"),
        ("vectors", "|i1"),
        ("scales", "<f4"),
        ("key_blob", "|u1"),
        ("key_off", "<i8"),
        ("key_none", "|u1"),
        ("cap_blob", "|u1"),
        ("cap_off", "<i8"),
    )
}


@dataclass(frozen=True, slots=True)
class WindowStats:
    """A snapshot of the window's size (for /metrics, logs and tests)."""

    tokens: int
    frames: int
    segment_files: int
    vector_rows: int  # distinct int8 rows searched: shared keyed rows + key-less rows
    shared_rows: int  # keyed rows in use across segments
    nbytes: int
    disk_bytes: int


class WindowError(StreamdError):
    """The token window was misused or its directory does not fit (dim, encoder, manifest)."""


class TokenKind(IntEnum):
    SCENE = 0
    OBJECT = 1
    GLOBAL = 2
    TILE = 3


_WHOLE_FRAME_KINDS = (TokenKind.SCENE, TokenKind.GLOBAL)


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """The tokens of one frame, as the encoder produced them.

    `vectors` are L2-normalised float32 [n, D]; `keys` are dedup keys (e.g. the caption; None:
    never deduplicate); `kinds` are `TokenKind` values; `class_ids`/`track_ids` are -1 where
    none; `boxes` are pixel x1, y1, x2, y2 (zeros where none); `captions` are human text ("" ok).
    Arrays are converted to these dtypes on construction.
    """

    vectors: F32
    keys: tuple[str | None, ...]
    kinds: U8
    class_ids: I16
    boxes: F32
    scores: F32
    track_ids: I32
    captions: tuple[str, ...]

    def __post_init__(self) -> None:
        vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise WindowError(f"TokenBatch.vectors must be 2-D [n, D], got shape {vectors.shape}")
        n = len(vectors)
        if not np.isfinite(vectors).all():
            raise WindowError("TokenBatch.vectors contains NaN or infinity")
        object.__setattr__(self, "vectors", vectors)
        for name, dtype, shape in (
            ("kinds", np.uint8, (n,)),
            ("class_ids", np.int16, (n,)),
            ("boxes", np.float32, (n, 4)),
            ("scores", np.float32, (n,)),
            ("track_ids", np.int32, (n,)),
        ):
            value = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if value.shape != shape:
                raise WindowError(f"TokenBatch.{name} has shape {value.shape}, expected {shape}")
            object.__setattr__(self, name, value)
        for name in ("keys", "captions"):
            strings = tuple(getattr(self, name))
            if len(strings) != n:
                raise WindowError(f"TokenBatch.{name} has {len(strings)} entries for {n} tokens")
            object.__setattr__(self, name, strings)

    @classmethod
    def create(
        cls,
        vectors: npt.ArrayLike,
        kinds: int | npt.ArrayLike,
        *,
        keys: Sequence[str | None] | None = None,
        class_ids: npt.ArrayLike | None = None,
        boxes: npt.ArrayLike | None = None,
        scores: npt.ArrayLike | None = None,
        track_ids: npt.ArrayLike | None = None,
        captions: Sequence[str] | None = None,
    ) -> TokenBatch:
        """A batch with defaults for what the encoder does not provide (no key, -1, zeros)."""
        v = np.asarray(vectors, dtype=np.float32)
        n = len(v)
        kind_array = np.asarray(kinds, dtype=np.uint8)
        return cls(
            vectors=v,
            keys=tuple(keys) if keys is not None else (None,) * n,
            kinds=np.full(n, kind_array, np.uint8) if kind_array.ndim == 0 else kind_array,
            class_ids=np.full(n, -1, np.int16) if class_ids is None else np.asarray(class_ids),
            boxes=np.zeros((n, 4), np.float32) if boxes is None else np.asarray(boxes),
            scores=np.zeros(n, np.float32) if scores is None else np.asarray(scores),
            track_ids=np.full(n, -1, np.int32) if track_ids is None else np.asarray(track_ids),
            captions=tuple(captions) if captions is not None else ("",) * n,
        )

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def _grown(a: npt.NDArray[Any], used: int, capacity: int) -> npt.NDArray[Any]:
    # A new array rather than a resize in place: a search may still hold the old one.
    out = np.zeros((capacity, *a.shape[1:]), a.dtype)
    out[:used] = a[:used]
    return out


@dataclass(frozen=True, slots=True)
class _SegView:
    """What a search needs of one segment, captured under the lock."""

    f_ts: F64
    f_id: I64
    f_start: I32
    f_count: I32
    first_frame: int
    n_frames: int
    n_tokens: int
    vec_row: I32
    kind: U8
    box: F16
    class_id: I16
    track_id: I32
    vectors: npt.NDArray[np.int8]
    scales: F32
    scales_bf16: torch.Tensor | None
    rowmap: I32 | None  # to shared rows when every row has a key, else None
    identity_rows: bool  # token i uses row i (key-less tokens only): no gather needed
    table: VectorTable

    def frame_range(self, since: float | None, until: float | None) -> tuple[int, int]:
        f_ts = self.f_ts[: self.n_frames]
        lo = self.first_frame
        if since is not None:
            lo = max(lo, int(np.searchsorted(f_ts, since, "left")))
        hi = self.n_frames if until is None else int(np.searchsorted(f_ts, until, "right"))
        return lo, hi

    def token_end(self, frame: int) -> int:
        return int(self.f_start[frame]) if frame < self.n_frames else self.n_tokens


@dataclass(frozen=True, slots=True)
class _Scored:
    """One segment's part of a search: its frames in range and their scores."""

    view: _SegView
    first_frame: int
    row_scores: F32  # per vector row of the segment
    frame_scores: F32
    frame_ts: F64


class _Segment:
    """A run of whole frames: columns, frame index, its vector rows and their shared rows.

    Built empty and appended to (the active segment), or wrapped around a mapped file.
    """

    def __init__(self, seq: int, dim: int, capacity: int) -> None:
        self.seq = seq
        self.path: Path | None = None
        self.n_tokens = 0
        self.n_frames = 0
        self.first_frame = 0  # frames before this one are evicted
        self.ts: F64 = np.zeros(capacity, np.float64)
        self.frame_id: I64 = np.zeros(capacity, np.int64)
        self.kind: U8 = np.zeros(capacity, np.uint8)
        self.class_id: I16 = np.zeros(capacity, np.int16)
        self.box: F16 = np.zeros((capacity, 4), np.float16)
        self.score: F32 = np.zeros(capacity, np.float32)
        self.track_id: I32 = np.zeros(capacity, np.int32)
        self.vec_row: I32 = np.zeros(capacity, np.int32)
        frames = max(16, min(capacity, 1024))
        self.f_ts: F64 = np.zeros(frames, np.float64)
        self.f_id: I64 = np.zeros(frames, np.int64)
        self.f_start: I32 = np.zeros(frames, np.int32)
        self.f_count: I32 = np.zeros(frames, np.int32)
        self.table = VectorTable(dim)
        self.rowmap: I32 = np.full(256, -1, np.int32)  # row → shared row, -1: no key
        self.unkeyed_rows = 0
        self.scales_bf16: torch.Tensor | None = None

    # -- building ---------------------------------------------------------------------------

    def _reserve(self, tokens: int) -> None:
        need = self.n_tokens + tokens
        if need > len(self.ts):
            cap = max(need, len(self.ts) + len(self.ts) // 2)
            for name in ("ts", "frame_id", "kind", "class_id", "box", "score", "track_id"):
                setattr(self, name, _grown(getattr(self, name), self.n_tokens, cap))
            self.vec_row = _grown(self.vec_row, self.n_tokens, cap)
        if self.n_frames == len(self.f_ts):
            cap = 2 * len(self.f_ts)
            self.f_ts = _grown(self.f_ts, self.n_frames, cap)
            self.f_id = _grown(self.f_id, self.n_frames, cap)
            self.f_start = _grown(self.f_start, self.n_frames, cap)
            self.f_count = _grown(self.f_count, self.n_frames, cap)

    def set_rowmap(self, row: int, shared_row: int) -> None:
        if row >= len(self.rowmap):
            grown = np.full(2 * len(self.rowmap), -1, np.int32)
            grown[: len(self.rowmap)] = self.rowmap
            self.rowmap = grown
        self.rowmap[row] = shared_row

    def append(self, frame_ts: float, frame_id: int, batch: TokenBatch, rows: I32) -> None:
        n = len(batch)
        self._reserve(n)
        t0, t1 = self.n_tokens, self.n_tokens + n
        self.ts[t0:t1] = frame_ts
        self.frame_id[t0:t1] = frame_id
        self.kind[t0:t1] = batch.kinds
        self.class_id[t0:t1] = batch.class_ids
        self.box[t0:t1] = batch.boxes
        self.score[t0:t1] = batch.scores
        self.track_id[t0:t1] = batch.track_ids
        self.vec_row[t0:t1] = rows
        f = self.n_frames
        self.f_ts[f] = frame_ts
        self.f_id[f] = frame_id
        self.f_start[f] = t0
        self.f_count[f] = n
        # Counts last: a search that copied the old counts never looks past them.
        self.n_tokens = t1
        self.n_frames = f + 1

    def file_arrays(self) -> dict[str, npt.NDArray[Any]]:
        n, f = self.n_tokens, self.n_frames
        vectors, scales = self.table.view()
        keys, captions = self.table.columns()
        return {
            "ts": self.ts[:n],
            "frame_id": self.frame_id[:n],
            "kind": self.kind[:n],
            "class_id": self.class_id[:n],
            "box": self.box[:n],
            "score": self.score[:n],
            "track_id": self.track_id[:n],
            "vec_row": self.vec_row[:n],
            "f_ts": self.f_ts[:f],
            "f_id": self.f_id[:f],
            "f_start": self.f_start[:f],
            "f_count": self.f_count[:f],
            "vectors": vectors,
            "scales": scales,
            "key_blob": keys.blob,
            "key_off": keys.offsets,
            "key_none": keys.none if keys.none is not None else np.zeros(len(keys), np.uint8),
            "cap_blob": captions.blob,
            "cap_off": captions.offsets,
        }

    # -- sealed -----------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls, seq: int, path: Path, arrays: dict[str, npt.NDArray[Any]], dim: int
    ) -> _Segment:
        """Wrap a mapped segment file's arrays, checking that they are consistent."""
        seg = cls(seq, dim, 1)
        seg.path = path
        for name in ("ts", "frame_id", "kind", "class_id", "box", "score", "track_id", "vec_row"):
            setattr(seg, name, arrays[name])
        seg.f_ts, seg.f_id = arrays["f_ts"], arrays["f_id"]
        seg.f_start, seg.f_count = arrays["f_start"], arrays["f_count"]
        seg.n_tokens, seg.n_frames = len(seg.ts), len(seg.f_ts)
        keys = StringColumn(arrays["key_blob"], arrays["key_off"], arrays["key_none"])
        captions = StringColumn(arrays["cap_blob"], arrays["cap_off"])
        seg.table = VectorTable.sealed(arrays["vectors"], arrays["scales"], keys, captions)
        _check_consistent(path, seg, dim)
        rows = len(seg.table)
        seg.rowmap = np.full(rows, -1, np.int32)
        seg.unkeyed_rows = int(np.count_nonzero(arrays["key_none"]))
        seg.scales_bf16 = torch.from_numpy(np.array(arrays["scales"])).to(torch.bfloat16)
        return seg

    # -- reading ----------------------------------------------------------------------------

    @property
    def live_frames(self) -> int:
        return self.n_frames - self.first_frame

    @property
    def live_tokens(self) -> int:
        if self.first_frame >= self.n_frames:
            return 0
        return self.n_tokens - int(self.f_start[self.first_frame])

    @property
    def keyed_only(self) -> bool:
        return self.unkeyed_rows == 0

    def view(self) -> _SegView:
        vectors, scales = self.table.view()
        return _SegView(
            f_ts=self.f_ts,
            f_id=self.f_id,
            f_start=self.f_start,
            f_count=self.f_count,
            first_frame=self.first_frame,
            n_frames=self.n_frames,
            n_tokens=self.n_tokens,
            vec_row=self.vec_row,
            kind=self.kind,
            box=self.box,
            class_id=self.class_id,
            track_id=self.track_id,
            vectors=vectors,
            scales=scales,
            scales_bf16=self.scales_bf16,
            rowmap=self.rowmap[: len(vectors)] if self.keyed_only else None,
            identity_rows=self.unkeyed_rows == self.n_tokens == len(vectors),
            table=self.table,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of token columns, frame index and searched vector rows (growth included).

        Not counted, because a search never reads them and so they stay on disk: a sealed
        segment's keys and captions (read only for the few moments returned) and, where
        every row has a key, its own copy of the rows (scored through the shared table).
        """
        columns = (
            self.ts,
            self.frame_id,
            self.kind,
            self.class_id,
            self.box,
            self.score,
            self.track_id,
            self.vec_row,
            self.f_ts,
            self.f_id,
            self.f_start,
            self.f_count,
            self.rowmap,
        )
        total = sum(int(a.nbytes) for a in columns)
        if self.path is None:
            total += self.table.nbytes
        elif not self.keyed_only:
            total += self.table.vector_nbytes
            if self.scales_bf16 is not None:
                total += self.scales_bf16.numel() * 2
        return total


def _check_consistent(path: Path, seg: _Segment, dim: int) -> None:
    """Cheap structural checks, so a file that passes its CRCs but makes no sense (a bug
    in some writer) is refused here instead of crashing a search later."""
    n, f = seg.n_tokens, seg.n_frames
    vectors, scales = seg.table.view()
    problem = None
    if f == 0 or n == 0:
        problem = "no frames"
    elif vectors.ndim != 2 or vectors.shape[1] != dim:
        problem = f"vectors have shape {vectors.shape}, store dim is {dim}"
    elif (
        seg.box.shape != (n, 4)
        or {len(a) for a in (seg.frame_id, seg.kind, seg.class_id, seg.score, seg.track_id)} != {n}
        or {len(seg.vec_row)} != {n}
        or {len(a) for a in (seg.f_id, seg.f_start, seg.f_count)} != {f}
    ):
        problem = "columns of different lengths"
    elif (
        seg.f_start[0] != 0
        or np.any(seg.f_count <= 0)
        or np.any(seg.f_start[1:] != seg.f_start[:-1] + seg.f_count[:-1])
        or int(seg.f_start[-1]) + int(seg.f_count[-1]) != n
    ):
        problem = "frame index does not cover the tokens"
    elif np.any(np.diff(seg.f_ts) < 0) or not np.array_equal(
        seg.ts, np.repeat(seg.f_ts, seg.f_count)
    ):
        problem = "timestamps out of order or not matching their frames"
    elif len(scales) != len(vectors) or not np.isfinite(scales).all():
        problem = "bad vector scales"
    elif np.any(seg.vec_row < 0) or np.any(seg.vec_row >= len(vectors)):
        problem = "token refers to a missing vector row"
    else:
        keys, captions = seg.table.columns()
        for column in (keys, captions):
            off = column.offsets
            if (
                len(off) != len(vectors) + 1
                or off[0] != 0
                or np.any(np.diff(off) < 0)
                or off[-1] != len(column.blob)
            ):
                problem = "string table offsets are inconsistent"
        if keys.none is None or len(keys.none) != len(vectors):
            problem = "string table offsets are inconsistent"
    if problem:
        raise CorruptSegmentError(path, problem)


class TokenStore:
    """Rolling, persistent, searchable window of one camera's tokens (see module doc).

    Constructing a store on a directory loads what is already there (completed segments).
    `encoder` names the model that made the vectors; a directory written with another encoder
    or dim is refused. `segment_tokens` is capped at a quarter of the budget so that a small
    window does not carry a large active segment. Search knobs (see `moments`): `hit_margin`,
    `hit_fraction`, `merge_gap_s`. `max_age_s` is measured back from the newest frame, not
    the wall clock, so a window reopened after downtime keeps its frames until new ones come.

    Threads: `append`, `flush` and `close` belong to one writer thread; `search` and the
    read-only properties may be called from any thread at the same time.
    """

    def __init__(
        self,
        directory: Path,
        dim: int,
        budget: int = 1_000_000,
        max_age_s: float | None = None,
        segment_tokens: int = 16384,
        *,
        encoder: str = "objects",
        camera: str | None = None,
        hit_margin: float = 0.05,
        hit_fraction: float = 0.01,
        merge_gap_s: float = 2.0,
    ) -> None:
        if dim <= 0 or budget <= 0 or segment_tokens <= 0:
            raise WindowError(
                f"dim, budget and segment_tokens must be positive "
                f"(got {dim}, {budget}, {segment_tokens})"
            )
        if max_age_s is not None and not max_age_s > 0:
            raise WindowError(f"max_age_s must be positive or None, got {max_age_s}")
        self.directory = Path(directory)
        self.dim = dim
        self.budget = budget
        self.max_age_s = max_age_s
        self.segment_tokens = max(1, min(segment_tokens, budget // 4))
        self.encoder = encoder
        self.camera = camera
        self.hit_margin = hit_margin
        self.hit_fraction = hit_fraction
        self.merge_gap_s = merge_gap_s
        self._lock = threading.Lock()
        self._shared = SharedVectors(dim)
        self._segments: list[_Segment] = []  # oldest first; the last is the active one
        self._live_tokens = 0
        self._live_frames = 0
        self._last_ts = -math.inf
        self._closed = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_manifest()
        next_seq = self._load_existing()
        self._segments.append(self._new_segment(next_seq))

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- opening ----------------------------------------------------------------------------

    def _check_manifest(self) -> None:
        path = self.directory / MANIFEST
        want = {"format": MANIFEST_FORMAT, "dim": self.dim, "encoder": self.encoder}
        if not path.exists():
            tmp = path.with_name(MANIFEST + ".tmp")
            tmp.write_text(json.dumps(want, indent=2) + "\n")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return
        try:
            have = json.loads(path.read_text())
            dim, encoder = int(have["dim"]), str(have["encoder"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WindowError(f"token window manifest {path} is unreadable: {exc}") from exc
        if (dim, encoder) != (self.dim, self.encoder):
            raise WindowError(
                f"token window {self.directory} holds {encoder!r} tokens of dim {dim}, "
                f"but was opened for {self.encoder!r} with dim {self.dim}; use another "
                f"directory, or delete this one to start the window afresh"
            )

    def _load_existing(self) -> int:
        """Load the newest segments the budget keeps; returns the next sequence number."""
        for tmp in self.directory.glob("seg-*.seg.tmp"):
            # An unfinished write from a crash: by construction never part of the window.
            tmp.unlink(missing_ok=True)
        files: list[tuple[int, Path]] = []
        for path in self.directory.iterdir():
            match = _SEGMENT_NAME.match(path.name)
            if match:
                files.append((int(match.group(1)), path))
        files.sort()
        kept: list[_Segment] = []
        doomed: list[Path] = []
        tokens = 0
        cutoff = -math.inf
        for seq, path in reversed(files):
            try:
                header = read_header(path)
                if tokens >= self.budget or float(header.meta["last_ts"]) < cutoff:
                    doomed.append(path)  # wholly older than what the window keeps
                    continue
                seg = self._load_segment(seq, header)
            except CorruptSegmentError as exc:
                log.warning("skipping %s; the rest of the window loads without it", exc)
                continue
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("skipping segment file %s: bad metadata (%s)", path, exc)
                continue
            if kept and seg.f_ts[-1] > kept[-1].f_ts[0]:
                log.warning(
                    "skipping segment file %s: its frames overlap the newer segment %s",
                    path,
                    kept[-1].path,
                )
                continue
            kept.append(seg)
            tokens += seg.n_tokens
            if self.max_age_s is not None and cutoff == -math.inf:
                cutoff = float(seg.f_ts[-1]) - self.max_age_s
        for path in doomed:
            path.unlink(missing_ok=True)
        for seg in reversed(kept):
            self._share_rows(seg)
            self._segments.append(seg)
            self._live_tokens += seg.n_tokens
            self._live_frames += seg.n_frames
            self._last_ts = float(seg.f_ts[-1])
        for path in self._evict_locked():
            path.unlink(missing_ok=True)
        if kept:
            log.info(
                "token window %s: resumed %d tokens in %d frames from %d segment files",
                self.directory,
                self._live_tokens,
                self._live_frames,
                len(kept),
            )
        return (files[-1][0] + 1) if files else 1

    def _load_segment(self, seq: int, header: SegmentHeader) -> _Segment:
        if int(header.meta.get("dim", -1)) != self.dim:
            raise CorruptSegmentError(
                header.path, f"dim {header.meta.get('dim')} does not match the store's {self.dim}"
            )
        if header.meta.get("encoder") != self.encoder:
            raise CorruptSegmentError(
                header.path,
                f"written by encoder {header.meta.get('encoder')!r}, not {self.encoder!r}",
            )
        arrays = load_segment(header, _SCHEMA, verify=True)
        return _Segment.from_arrays(seq, header.path, arrays, self.dim)

    def _share_rows(self, seg: _Segment) -> None:
        """Enter a loaded segment's keyed rows into the shared table."""
        keys, _ = seg.table.columns()
        if keys.none is None or len(keys) == 0:
            return
        blob = keys.blob.tobytes()
        offsets = keys.offsets.tolist()
        vectors, scales = seg.table.view()
        keyed = np.flatnonzero(keys.none == 0).tolist()
        for row in keyed:
            key = blob[offsets[row] : offsets[row + 1]].decode()
            seg.rowmap[row] = self._shared.acquire(key, vectors[row], scales[row])

    # -- writing ----------------------------------------------------------------------------

    def _new_segment(self, seq: int) -> _Segment:
        return _Segment(seq, self.dim, self.segment_tokens + 64)

    def _check_open(self) -> None:
        if self._closed:
            raise WindowError(f"token window {self.directory} is closed")

    def append(self, frame_ts: float, frame_id: int, batch: TokenBatch) -> None:
        """Add one frame's tokens (a batch without tokens adds nothing).

        Frames must come in time order. May write a segment file (when the active segment is
        full) and delete evicted ones; raises WindowError if writing fails, in which case the
        segment stays in memory and searchable until evicted.
        """
        if batch.dim != self.dim:
            raise WindowError(f"token dim {batch.dim} does not match the store's {self.dim}")
        if not math.isfinite(frame_ts):
            raise WindowError(f"frame timestamp must be finite, got {frame_ts}")
        if not len(batch):
            return
        qvecs, scales = quantise(batch.vectors)
        with self._lock:
            self._check_open()
            if frame_ts < self._last_ts:
                raise WindowError(
                    f"frame at {frame_ts} is older than the newest frame in the window "
                    f"({self._last_ts}); frames must be appended in time order"
                )
            seg = self._segments[-1]
            rows = self._add_rows(seg, qvecs, scales, batch)
            seg.append(frame_ts, frame_id, batch, rows)
            self._live_tokens += len(batch)
            self._live_frames += 1
            self._last_ts = frame_ts
            dropped = self._evict_locked()
            full = seg if seg.n_tokens >= self.segment_tokens else None
            if full is not None:
                self._segments.append(self._new_segment(full.seq + 1))
        for path in dropped:
            path.unlink(missing_ok=True)
        if full is not None:
            self._seal(full)

    def _add_rows(
        self, seg: _Segment, qvecs: npt.NDArray[np.int8], scales: F32, batch: TokenBatch
    ) -> I32:
        rows = np.empty(len(batch), np.int32)
        table = seg.table
        keyed = [i for i, key in enumerate(batch.keys) if key is not None]
        if len(keyed) < len(batch):
            unkeyed = np.ones(len(batch), bool)
            unkeyed[keyed] = False
            index = np.flatnonzero(unkeyed)
            captions = [batch.captions[i] for i in index.tolist()]
            first = table.extend(qvecs[index], scales[index], captions)
            rows[index] = np.arange(first, first + len(index), dtype=np.int32)
            seg.unkeyed_rows += len(index)
        for i in keyed:
            key = batch.keys[i]
            assert key is not None
            row = table.find(key)
            if row is None:
                shared = self._shared.find(key)
                # A key's vector is whatever it was first stored as, so every segment holds
                # the same int8 row and the shared and per-segment scores agree exactly.
                vec, scale = (qvecs[i], scales[i]) if shared is None else self._shared.row(shared)
                row = table.add(vec, scale, key, batch.captions[i])
                seg.set_rowmap(row, self._shared.acquire(key, vec, scale))
            rows[i] = row
        return rows

    def _evict_locked(self) -> list[Path]:
        """Evict the oldest frames over budget or age; returns files to delete (unlocked)."""
        doomed: list[Path] = []
        cutoff = -math.inf if self.max_age_s is None else self._last_ts - self.max_age_s
        while self._live_frames > 1:
            seg = self._segments[0]
            lo, nf = seg.first_frame, seg.n_frames
            if lo >= nf:
                if seg is self._segments[-1]:
                    break
                doomed.extend(self._drop_oldest())
                continue
            excess = self._live_tokens - self.budget
            if excess <= 0 and seg.f_ts[lo] >= cutoff:
                break
            starts = seg.f_start[lo:nf]
            j = lo
            if excess > 0:
                j = lo + int(np.searchsorted(starts, int(starts[0]) + excess, "left"))
            if cutoff > -math.inf:
                j = max(j, lo + int(np.searchsorted(seg.f_ts[lo:nf], cutoff, "left")))
            # Never evict the newest frame: one frame larger than the budget still stays.
            j = min(j, nf, lo + self._live_frames - 1)
            if j == lo:
                break
            end = int(seg.f_start[j]) if j < nf else seg.n_tokens
            self._live_tokens -= end - int(starts[0])
            self._live_frames -= j - lo
            seg.first_frame = j
            if j < nf:
                break
        return doomed

    def _drop_oldest(self) -> list[Path]:
        seg = self._segments.pop(0)
        shared_rows = seg.rowmap[: len(seg.table)]
        shared_rows = shared_rows[shared_rows >= 0]
        if len(shared_rows):
            remap = self._shared.release(shared_rows)
            if remap is not None:
                for other in self._segments:
                    # New arrays, not in-place: a search may hold the old row map.
                    rowmap = other.rowmap.copy()
                    mask = rowmap >= 0
                    rowmap[mask] = remap[rowmap[mask]]
                    other.rowmap = rowmap
        return [seg.path] if seg.path is not None else []

    def _seal(self, seg: _Segment) -> None:
        """Write a full segment to its file and swap in the mapped copy."""
        if seg.n_frames == 0:
            return
        path = self.directory / f"seg-{seg.seq:010d}.seg"
        meta = {
            "seq": seg.seq,
            "dim": self.dim,
            "encoder": self.encoder,
            "tokens": seg.n_tokens,
            "frames": seg.n_frames,
            "rows": len(seg.table),
            "first_ts": float(seg.f_ts[0]),
            "last_ts": float(seg.f_ts[seg.n_frames - 1]),
        }
        try:
            write_segment(path, meta, seg.file_arrays())
            # Freshly written and fsynced by us: skip re-reading it for the CRCs.
            sealed = _Segment.from_arrays(
                seg.seq, path, load_segment(read_header(path), _SCHEMA, verify=False), self.dim
            )
        except (OSError, CorruptSegmentError) as exc:
            raise WindowError(
                f"cannot write token segment {path}: {exc}; it stays in memory only"
            ) from exc
        with self._lock:
            for i, current in enumerate(self._segments):
                if current is seg:
                    sealed.first_frame = seg.first_frame
                    sealed.rowmap = seg.rowmap[: len(seg.table)].copy()
                    self._segments[i] = sealed
                    return
        # Evicted while being written (cannot happen with a single writer): keep disk in step.
        path.unlink(missing_ok=True)

    def flush(self) -> None:
        """Write the active segment now (a restart keeps everything appended so far)."""
        with self._lock:
            self._check_open()
            seg = self._segments[-1]
            if seg.n_frames == 0:
                return
            self._segments.append(self._new_segment(seg.seq + 1))
        self._seal(seg)

    def close(self) -> None:
        """Flush and release the window; later calls raise WindowError. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._lock:
                self._closed = True
                # Dropping the references unmaps the files (once no search holds them).
                self._segments = []
                self._shared = SharedVectors(self.dim)

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._live_tokens

    @property
    def frames_count(self) -> int:
        return self._live_frames

    def span(self) -> tuple[float, float] | None:
        """Timestamps of the oldest and newest live frames, or None when empty."""
        with self._lock:
            for seg in self._segments:
                if seg.live_frames > 0:
                    return float(seg.f_ts[seg.first_frame]), self._last_ts
        return None

    @property
    def nbytes(self) -> int:
        """Memory this window holds for searching and writing (see `_Segment.nbytes`)."""
        with self._lock:
            return sum(seg.nbytes for seg in self._segments) + self._shared.nbytes

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            paths = [seg.path for seg in self._segments if seg.path is not None]
        return sum(p.stat().st_size for p in paths if p.exists())

    @property
    def segment_files(self) -> int:
        with self._lock:
            return sum(1 for seg in self._segments if seg.path is not None)

    def stats(self) -> WindowStats:
        with self._lock:
            shared = self._shared.live_rows
            unkeyed = sum(seg.unkeyed_rows for seg in self._segments)
            tokens, frames = self._live_tokens, self._live_frames
        return WindowStats(
            tokens=tokens,
            frames=frames,
            segment_files=self.segment_files,
            vector_rows=shared + unkeyed,
            shared_rows=shared,
            nbytes=self.nbytes,
            disk_bytes=self.disk_bytes,
        )

    def timestamps(self) -> F64:
        """Timestamps of the live frames, oldest first (a copy)."""
        with self._lock:
            parts = [seg.f_ts[seg.first_frame : seg.n_frames] for seg in self._segments]
        return np.concatenate(parts) if parts else np.empty(0, np.float64)

    def search(
        self,
        query: npt.ArrayLike,
        since: float | None = None,
        until: float | None = None,
        limit: int = 10,
        min_score: float | None = None,
        kinds: Iterable[int] | None = None,
    ) -> list[Moment]:
        """The best moments for `query` (a float32 [D] vector, e.g. an embedded text) in
        [since, until] (None: open-ended), best first; `kinds` limits the token kinds scored."""
        if since is not None and until is not None and since > until:
            raise WindowError(f"inverted time range: since {since} is after until {until}")
        q = np.asarray(query, dtype=np.float32)
        if q.shape != (self.dim,) or not np.isfinite(q).all():
            raise WindowError(f"query must be a finite vector of dim {self.dim}, got {q.shape}")
        allowed = None
        if kinds is not None:
            wanted = [int(k) for k in kinds]
            if any(not 0 <= k <= 255 for k in wanted):
                raise WindowError(f"token kinds must be in 0..255, got {wanted}")
            allowed = np.zeros(256, bool)
            allowed[wanted] = True
        with self._lock:
            self._check_open()
            views = [seg.view() for seg in self._segments if seg.live_frames > 0]
            shared_vectors, shared_scales = self._shared.view()
        prepared = Query(q)
        shared_scores: F32 | None = None
        scored: list[_Scored] = []
        for v in views:
            lo, hi = v.frame_range(since, until)
            if lo >= hi:
                continue
            if v.rowmap is not None:
                if shared_scores is None:
                    shared_scores = int8_scores(shared_vectors, shared_scales, prepared)
                rows = shared_scores[v.rowmap]
            else:
                rows = int8_scores(v.vectors, v.scales, prepared, v.scales_bf16)
            t0, t1 = int(v.f_start[lo]), v.token_end(hi)
            tokens = rows[t0:t1] if v.identity_rows else rows[v.vec_row[t0:t1]]
            if allowed is not None:
                tokens = np.where(allowed[v.kind[t0:t1]], tokens, np.float32(-np.inf))
            frames = np.maximum.reduceat(tokens, v.f_start[lo:hi] - t0)
            scored.append(_Scored(v, lo, rows, frames, v.f_ts[lo:hi]))
        if not scored:
            return []
        all_ts = np.concatenate([s.frame_ts for s in scored])
        runs = find_runs(
            all_ts,
            np.concatenate([s.frame_scores for s in scored]),
            limit=limit,
            margin=self.hit_margin,
            fraction=self.hit_fraction,
            min_score=min_score,
            merge_gap_s=self.merge_gap_s,
        )
        offsets = np.cumsum([0] + [len(s.frame_ts) for s in scored])
        moments = []
        for run in runs:
            k = int(np.searchsorted(offsets, run.best, "right")) - 1
            part = scored[k]
            frame = part.first_frame + run.best - int(offsets[k])
            moments.append(
                self._moment(
                    part,
                    frame,
                    allowed,
                    float(all_ts[run.first]),
                    float(all_ts[run.last]),
                    run.score,
                    run.hits,
                )
            )
        return moments

    def _moment(
        self,
        part: _Scored,
        frame: int,
        allowed: npt.NDArray[np.bool_] | None,
        start: float,
        end: float,
        score: float,
        hits: int,
    ) -> Moment:
        """Describe a run by the best-scoring token of its best frame."""
        v = part.view
        t0 = int(v.f_start[frame])
        t1 = t0 + int(v.f_count[frame])
        scores = part.row_scores[v.vec_row[t0:t1]]
        if allowed is not None:
            scores = np.where(allowed[v.kind[t0:t1]], scores, -np.inf)
        token = t0 + int(np.argmax(scores))
        kind = int(v.kind[token])
        box = tuple(float(x) for x in v.box[token])
        has_box = kind not in _WHOLE_FRAME_KINDS and any(box)
        return Moment(
            start=start,
            end=end,
            best_time=float(v.f_ts[frame]),
            score=score,
            frame_id=int(v.f_id[frame]),
            best_caption=v.table.caption(int(v.vec_row[token])),
            best_box=(box[0], box[1], box[2], box[3]) if has_box else None,
            camera=self.camera,
            hits=hits,
            kind=kind,
            class_id=int(v.class_id[token]),
            track_id=int(v.track_id[token]),
        )

"""Int8 token vectors: quantisation, the scoring kernel, and the two row tables.

A token vector is stored as int8 with one float scale per row (symmetric: scale = max|v| / 127),
a quarter of float32 and precise enough for ranking (a score moves by well under 0.01).

Scoring kernel. Measured on the 2-core AVX-512 CPU this was built on, scoring 1M int8 rows in
16K-row blocks against one float query (median, `bench/window.py` prints the same comparison):

    numpy: int8→float32 in cache-sized chunks, then matvec   1M×384 ≈ 60-75 ms, 1M×512 ≈ 160 ms
    torch._int_mm (int8 query, int32 result)                 1M×384 ≈ 45 ms,    1M×512 ≈ 60 ms
    torch aten._weight_int8pack_mm, bf16 query and result    1M×384 ≈ 15 ms,    1M×512 ≈ 27 ms

The last is the weight-only-int8 decode kernel that LLM inference uses on CPU: it reads the int8
rows in place (no float copy, so no extra RAM, and it works on memory-mapped segments), applies
the per-row scale itself and is memory-bound rather than compute-bound. Its result is bfloat16
(8-bit mantissa: a score of 0.8 is exact to ±0.003), which is below the int8 error already in
the vectors and irrelevant for picking moments. The op is private to torch, so it is probed once
against a numpy reference and the numpy path is used where it is missing or wrong, and for
dims that are not a multiple of 16 (its vector loops assume that without checking).

Two tables share the kernel:
- `VectorTable` — append-only, one per segment, optionally deduplicating by key (caption). It is
  what a segment file stores, so every segment can be loaded on its own.
- `SharedVectors` — one per store, holding each distinct key once across all live segments,
  with a count of the segments that use it. Searching a window of captioned object tokens then
  scores the few thousand distinct captions once and gathers, instead of re-scoring each
  segment's copy. Rows are never overwritten (a search may be reading them): rows no segment
  uses are dropped by compaction into new arrays, and the store remaps its segments.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

_NUMPY_CHUNK_ROWS = 1024  # int8→float32 chunk that stays in L2 (1024 × 512 × 4 B = 2 MiB)
_TORCH_COLUMNS = 16  # the torch kernel needs dim to be a multiple of this (see _torch_fits)


def quantise(vectors: F32) -> tuple[I8, F32]:
    """Symmetric per-row int8 quantisation: returns (int8 rows, float32 scale per row)."""
    scales = (np.abs(vectors).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    q = np.rint(vectors / safe[:, None])
    return np.clip(q, -127, 127).astype(np.int8), scales


def _numpy_scores(vectors: I8, scales: F32, query: F32) -> F32:
    out = np.empty(len(vectors), np.float32)
    buf = np.empty((min(_NUMPY_CHUNK_ROWS, len(vectors)), vectors.shape[1]), np.float32)
    for i in range(0, len(vectors), _NUMPY_CHUNK_ROWS):
        block = vectors[i : i + _NUMPY_CHUNK_ROWS]
        chunk = buf[: len(block)]
        np.copyto(chunk, block, casting="unsafe")
        np.matmul(chunk, query, out=out[i : i + len(block)])
    out *= scales
    return out


def _torch_scores(vectors: I8, scales: torch.Tensor, query: torch.Tensor) -> F32:
    result = torch.ops.aten._weight_int8pack_mm(query, torch.from_numpy(vectors), scales)
    scores: F32 = result[0].float().numpy()
    return scores


@functools.cache
def _torch_kernel_ok() -> bool:
    """Whether the torch int8 kernel exists here and agrees with numpy (probed once)."""
    rng = np.random.default_rng(0)
    vectors, scales = quantise(rng.standard_normal((37, 32)).astype(np.float32))
    query = rng.standard_normal(32).astype(np.float32)
    expected = _numpy_scores(vectors, scales, query)
    try:
        got = _torch_scores(vectors, _bf16(scales), _bf16(query).reshape(1, -1))
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        log.info("torch int8 scoring kernel unavailable (%s); using numpy", exc)
        return False
    ok = bool(np.allclose(got, expected, rtol=0.02, atol=0.05 * float(np.abs(expected).max())))
    if not ok:
        log.warning("torch int8 scoring kernel disagrees with numpy; using numpy")
    return ok


def _torch_fits(vectors: I8) -> bool:
    # The kernel's vector loops step 16 columns at a time with aligned loads and check
    # neither: other widths or alignments read past rows (wrong results, even a crash).
    # Read-only memory would make torch.from_numpy warn; segments are mapped writable.
    return (
        vectors.shape[1] % _TORCH_COLUMNS == 0
        and vectors.ctypes.data % 16 == 0
        and vectors.flags.writeable
        and vectors.flags.c_contiguous
    )


def scorer_name(dim: int) -> str:
    """The kernel `int8_scores` uses for `dim` on this machine (for benchmarks and logs)."""
    if dim % _TORCH_COLUMNS == 0 and _torch_kernel_ok():
        return "torch _weight_int8pack_mm (bf16)"
    return "numpy float32 chunks"


def _bf16(values: F32) -> torch.Tensor:
    # np.require copies only a read-only or strided input (torch warns on read-only memory).
    return torch.from_numpy(np.require(values, np.float32, ["C", "W"])).to(torch.bfloat16)


class Query:
    """A query vector prepared once for every table a search scores."""

    __slots__ = ("bf16", "f32")

    def __init__(self, query: F32) -> None:
        self.f32 = np.array(query, dtype=np.float32)  # own copy: the caller may reuse theirs
        self.bf16 = _bf16(self.f32).reshape(1, -1)


def int8_scores(
    vectors: I8, scales: F32, query: Query, scales_bf16: torch.Tensor | None = None
) -> F32:
    """Dot products of int8 rows (times their scales) with the query: float32 [rows].

    `vectors` must be C-contiguous and writable (torch refuses read-only memory without a
    warning; segments are mapped copy-on-write for that reason). `scales_bf16` is an optional
    cached bfloat16 copy of `scales`.
    """
    if len(vectors) == 0:
        return np.empty(0, np.float32)
    if _torch_fits(vectors) and _torch_kernel_ok():
        return _torch_scores(
            vectors, _bf16(scales) if scales_bf16 is None else scales_bf16, query.bf16
        )
    return _numpy_scores(vectors, scales, query.f32)


class StringColumn:
    """Strings of a sealed segment as one UTF-8 blob plus offsets: no Python object per row.

    `none` marks rows whose value is None (dedup keys may be None).
    """

    __slots__ = ("blob", "none", "offsets")

    def __init__(self, blob: U8, offsets: I64, none: U8 | None = None) -> None:
        self.blob = blob
        self.offsets = offsets
        self.none = none

    @classmethod
    def from_list(cls, values: Sequence[str | None]) -> StringColumn:
        encoded = [b"" if v is None else v.encode() for v in values]
        offsets = np.zeros(len(values) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), np.uint8).copy()
        none = np.fromiter((v is None for v in values), np.uint8, len(values))
        return cls(blob, offsets, none)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str | None:
        if self.none is not None and self.none[row]:
            return None
        return bytes(self.blob[self.offsets[row] : self.offsets[row + 1]]).decode()

    @property
    def nbytes(self) -> int:
        return int(
            self.blob.nbytes + self.offsets.nbytes + (0 if self.none is None else self.none.nbytes)
        )


class VectorTable:
    """Append-only int8 rows with a scale each, optionally deduplicated by key.

    A growing table (the active segment) keeps keys and captions in lists and doubles its
    arrays when full; a sealed one wraps memory-mapped arrays and string columns. Rows below
    `len(table)` never change, so a reader holding `view()` may score them without a lock.
    """

    def __init__(self, dim: int, *, dedup: bool = True, capacity: int = 256) -> None:
        self.dim = dim
        self.dedup = dedup
        self._vectors: I8 = np.zeros((max(1, capacity), dim), np.int8)
        self._scales: F32 = np.zeros(max(1, capacity), np.float32)
        self._rows = 0
        self._keys: list[str | None] | StringColumn = []
        self._captions: list[str] | StringColumn = []
        self._index: dict[str, int] = {}
        self._sealed = False

    @classmethod
    def sealed(
        cls, vectors: I8, scales: F32, keys: StringColumn, captions: StringColumn
    ) -> VectorTable:
        """Wrap a segment's stored rows (read-only from here on)."""
        table = cls(vectors.shape[1], dedup=False, capacity=1)
        table._vectors, table._scales, table._rows = vectors, scales, len(vectors)
        table._keys, table._captions = keys, captions
        table._sealed = True
        return table

    def __len__(self) -> int:
        return self._rows

    def find(self, key: str) -> int | None:
        return self._index.get(key)

    def add(self, vector: I8, scale: np.float32, key: str | None, caption: str) -> int:
        """Append one quantised row (deduplicated by `key` when the table dedups); its row."""
        if self._sealed:
            raise RuntimeError("a sealed VectorTable is read-only")
        if self.dedup and key is not None:
            row = self._index.get(key)
            if row is not None:
                return row
        if self._rows == len(self._vectors):
            self._grow()
        row = self._rows
        self._vectors[row] = vector
        self._scales[row] = scale
        assert isinstance(self._keys, list)
        assert isinstance(self._captions, list)
        self._keys.append(key)
        self._captions.append(caption)
        if self.dedup and key is not None:
            self._index[key] = row
        self._rows = row + 1
        return row

    def extend(self, vectors: I8, scales: F32, captions: Sequence[str]) -> int:
        """Append rows without keys (never deduplicated); returns the first new row."""
        if self._sealed:
            raise RuntimeError("a sealed VectorTable is read-only")
        while self._rows + len(vectors) > len(self._vectors):
            self._grow()
        first = self._rows
        self._vectors[first : first + len(vectors)] = vectors
        self._scales[first : first + len(vectors)] = scales
        assert isinstance(self._keys, list)
        assert isinstance(self._captions, list)
        self._keys.extend([None] * len(vectors))
        self._captions.extend(captions)
        self._rows = first + len(vectors)
        return first

    def _grow(self) -> None:
        cap = len(self._vectors) * 2
        vectors = np.zeros((cap, self.dim), np.int8)
        vectors[: self._rows] = self._vectors[: self._rows]
        scales = np.zeros(cap, np.float32)
        scales[: self._rows] = self._scales[: self._rows]
        # New arrays, never resized in place: a concurrent reader keeps its old view.
        self._vectors, self._scales = vectors, scales

    def view(self) -> tuple[I8, F32]:
        """The live rows (int8 vectors, scales); stable for readers while rows are appended."""
        return self._vectors[: self._rows], self._scales[: self._rows]

    def scores(self, query: F32 | Query) -> F32:
        """Score of every row against `query` (float32 [rows])."""
        vectors, scales = self.view()
        return int8_scores(vectors, scales, query if isinstance(query, Query) else Query(query))

    def key(self, row: int) -> str | None:
        return self._keys[row]

    def caption(self, row: int) -> str:
        return self._captions[row] or ""

    def columns(self) -> tuple[StringColumn, StringColumn]:
        """Keys and captions as string columns (what a segment file stores)."""
        if isinstance(self._keys, StringColumn) and isinstance(self._captions, StringColumn):
            return self._keys, self._captions
        assert isinstance(self._keys, list)
        assert isinstance(self._captions, list)
        return StringColumn.from_list(self._keys), StringColumn.from_list(self._captions)

    @property
    def vector_nbytes(self) -> int:
        """Bytes of the int8 rows and scales (growth capacity included)."""
        return int(self._vectors.nbytes + self._scales.nbytes)

    @property
    def nbytes(self) -> int:
        """`vector_nbytes` plus keys and captions (Python strings approximated by size)."""
        strings = 0
        for column in (self._keys, self._captions):
            if isinstance(column, StringColumn):
                strings += column.nbytes
            else:
                # list slots plus each distinct string object (dense tables repeat "" / None)
                strings += 8 * len(column) + sum(sys.getsizeof(s) for s in set(column))
        return self.vector_nbytes + strings + 100 * len(self._index)


class SharedVectors:
    """Every distinct dedup key of the live window once, with a count of segments using it.

    The store calls `acquire` when a segment first uses a key and `release` when the segment
    is evicted. Rows no segment uses stay until they outnumber the used ones, then `release`
    compacts into new arrays and returns the old→new row map for the store to apply.
    """

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors: I8 = np.zeros((capacity, dim), np.int8)
        self._scales: F32 = np.zeros(capacity, np.float32)
        self._refs: I32 = np.zeros(capacity, np.int32)
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._rows = 0
        self.min_compact_rows = 4096  # below this, dead rows cost less than a compaction

    def __len__(self) -> int:
        return self._rows

    @property
    def live_rows(self) -> int:
        return int(np.count_nonzero(self._refs[: self._rows]))

    def find(self, key: str) -> int | None:
        return self._index.get(key)

    def row(self, row: int) -> tuple[I8, np.float32]:
        return self._vectors[row], self._scales[row]

    def acquire(self, key: str, vector: I8, scale: np.float32) -> int:
        """Row for `key` with one more user; `vector`/`scale` are stored if the key is new."""
        row = self._index.get(key)
        if row is None:
            if self._rows == len(self._vectors):
                self._resize(len(self._vectors) * 2)
            row = self._rows
            self._vectors[row] = vector
            self._scales[row] = scale
            self._keys.append(key)
            self._index[key] = row
            self._rows += 1
        self._refs[row] += 1
        return row

    def _resize(self, capacity: int) -> None:
        n = self._rows
        vectors = np.zeros((capacity, self.dim), np.int8)
        vectors[:n] = self._vectors[:n]
        scales = np.zeros(capacity, np.float32)
        scales[:n] = self._scales[:n]
        refs = np.zeros(capacity, np.int32)
        refs[:n] = self._refs[:n]
        self._vectors, self._scales, self._refs = vectors, scales, refs

    def release(self, rows: I32) -> I32 | None:
        """One user fewer for each row (each listed once). Returns an old→new map (-1: gone)
        when this compacted the table; the caller must remap every row it holds."""
        np.subtract.at(self._refs, rows, 1)  # .at: a repeated row counts each time
        live = self.live_rows
        if self._rows - live <= max(self.min_compact_rows, live):
            return None
        keep = self._refs[: self._rows] > 0
        remap = np.full(self._rows, -1, np.int32)
        remap[keep] = np.arange(live, dtype=np.int32)
        capacity = max(1024, 2 * live)
        vectors = np.zeros((capacity, self.dim), np.int8)
        vectors[:live] = self._vectors[: self._rows][keep]
        scales = np.zeros(capacity, np.float32)
        scales[:live] = self._scales[: self._rows][keep]
        refs = np.zeros(capacity, np.int32)
        refs[:live] = self._refs[: self._rows][keep]
        self._keys = [k for k, kept in zip(self._keys, keep.tolist(), strict=True) if kept]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._vectors, self._scales, self._refs, self._rows = vectors, scales, refs, live
        return remap

    def view(self) -> tuple[I8, F32]:
        return self._vectors[: self._rows], self._scales[: self._rows]

    @property
    def nbytes(self) -> int:
        keys = sum(sys.getsizeof(k) for k in self._keys) + 100 * len(self._index)
        return int(self._vectors.nbytes + self._scales.nbytes + self._refs.nbytes) + keys

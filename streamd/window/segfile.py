"""Segment files: one self-contained, checksummed file per sealed run of tokens.

Layout (little-endian):

    0   8 bytes   magic b"STRMDSEG"
    8   uint32    header length H
    12  uint32    CRC-32 of the header
    16  H bytes   JSON header: metadata plus, per array, dtype, shape, offset, size and CRC-32
    ..  arrays    each at a 64-byte aligned offset from the first aligned byte after the header

One file rather than a directory of .npy files so that publishing a segment is a single
`os.replace` of a fully written, fsynced temporary: after a crash a segment either exists whole
or not at all. Loading maps the file copy-on-write (`np.memmap(mode="c")`): pages are shared
with the page cache and never written back, and the arrays are writable as far as torch is
concerned, so the scoring kernel takes them without a copy or a read-only warning.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MAGIC = b"STRMDSEG"
VERSION = 1
_PREFIX = struct.Struct("<8sII")
_ALIGN = 64
_CRC_CHUNK = 8 << 20
_MAX_HEADER = 16 << 20  # a header is a few KiB; a bigger length field means corruption


class CorruptSegmentError(Exception):
    """A segment file cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"segment file {path}: {reason}")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    dtype: str
    shape: tuple[int, ...]
    offset: int  # from the data start
    nbytes: int
    crc: int


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    path: Path
    meta: dict[str, Any]
    arrays: dict[str, ArraySpec]
    data_start: int
    file_size: int


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def write_segment(
    path: Path, meta: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> None:
    """Write `arrays` and `meta` to `path` atomically (temporary file, fsync, rename)."""
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    specs: dict[str, list[Any]] = {}
    offset = 0
    for name, a in contiguous.items():
        specs[name] = [a.dtype.str, list(a.shape), offset, a.nbytes, zlib.crc32(a.data)]
        offset = _align(offset + a.nbytes)
    header = json.dumps(
        {"version": VERSION, "meta": dict(meta), "arrays": specs, "data_size": offset},
        separators=(",", ":"),
    ).encode()
    data_start = _align(_PREFIX.size + len(header))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, len(header), zlib.crc32(header)))
        f.write(header)
        for name, a in contiguous.items():
            f.seek(data_start + specs[name][2])
            f.write(a.data)
        f.truncate(data_start + offset)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself is only durable once the directory entry is on disk.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_header(path: Path) -> SegmentHeader:
    """Read and check a segment's header (sizes, magic, header CRC); arrays are not read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                raise CorruptSegmentError(path, f"truncated: {size} bytes, no header")
            magic, length, crc = _PREFIX.unpack(prefix)
            if magic != MAGIC:
                raise CorruptSegmentError(path, f"not a segment file (magic {magic!r})")
            if length > _MAX_HEADER:
                raise CorruptSegmentError(path, f"implausible header length {length}")
            raw = f.read(length)
    except OSError as exc:
        raise CorruptSegmentError(path, f"unreadable: {exc}") from exc
    if len(raw) < length:
        raise CorruptSegmentError(path, f"truncated inside the header ({size} bytes)")
    if zlib.crc32(raw) != crc:
        raise CorruptSegmentError(path, "header checksum mismatch")
    try:
        doc = json.loads(raw)
        if doc["version"] != VERSION:
            raise CorruptSegmentError(path, f"unsupported format version {doc['version']}")
        arrays = {
            name: ArraySpec(str(d), tuple(int(x) for x in shape), int(o), int(n), int(c))
            for name, (d, shape, o, n, c) in doc["arrays"].items()
        }
        data_size = int(doc["data_size"])
        meta = dict(doc["meta"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptSegmentError(path, f"malformed header: {exc}") from exc
    data_start = _align(_PREFIX.size + length)
    if size < data_start + data_size:
        raise CorruptSegmentError(
            path, f"truncated: {size} bytes, header promises {data_start + data_size}"
        )
    return SegmentHeader(path, meta, arrays, data_start, size)


def _crc_of_range(f: Any, start: int, nbytes: int) -> int:
    # Checked by reading, not through the mapping, so that verifying a segment does not make
    # pages resident in this process that searches will never touch.
    f.seek(start)
    crc, left = 0, nbytes
    while left:
        chunk = f.read(min(left, _CRC_CHUNK))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    return crc


def load_segment(
    header: SegmentHeader, expected: Mapping[str, np.dtype[Any]], *, verify: bool = True
) -> dict[str, npt.NDArray[Any]]:
    """Map a segment's arrays (checked against `expected` dtypes and, if `verify`, CRCs)."""
    path = header.path
    for name, dtype in expected.items():
        spec = header.arrays.get(name)
        if spec is None:
            raise CorruptSegmentError(path, f"array {name!r} missing")
        if np.dtype(spec.dtype) != dtype:
            raise CorruptSegmentError(path, f"array {name!r} has dtype {spec.dtype}, not {dtype}")
        count = int(np.prod(spec.shape)) if spec.shape else 1
        if count * dtype.itemsize != spec.nbytes or spec.offset % _ALIGN:
            raise CorruptSegmentError(path, f"array {name!r} has an inconsistent size or offset")
    if verify:
        try:
            with open(path, "rb") as f:
                for name in expected:
                    spec = header.arrays[name]
                    if _crc_of_range(f, header.data_start + spec.offset, spec.nbytes) != spec.crc:
                        raise CorruptSegmentError(path, f"checksum mismatch in array {name!r}")
        except OSError as exc:
            raise CorruptSegmentError(path, f"unreadable: {exc}") from exc
    try:
        mapped = np.memmap(path, dtype=np.uint8, mode="c")
    except (OSError, ValueError) as exc:
        raise CorruptSegmentError(path, f"cannot map: {exc}") from exc
    out: dict[str, npt.NDArray[Any]] = {}
    for name, dtype in expected.items():
        spec = header.arrays[name]
        start = header.data_start + spec.offset
        # Views of one mapping: the file stays mapped while any array is referenced, so a
        # search still running when the segment is evicted (and its file unlinked) is safe.
        raw = mapped[start : start + spec.nbytes]
        out[name] = np.ndarray(spec.shape, dtype=dtype, buffer=raw)
    return out

"""From per-frame scores to moments: which frames hit, and how hits merge into time ranges.

Similarity scales differ by encoder (MiniLM caption-to-text cosines spread over 0.3-0.9, CLIP
image-to-text over 0.15-0.35), so a fixed threshold would suit one and not the other. A frame
hits when it is within `margin` of the best frame in the range *or* among the top `fraction`
of frames — the first keeps every frame of a short strong event, the second still yields
several moments when one frame dominates — and, if the caller gave one, at least `min_score`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Moment:
    """A time range of the window that matches a query.

    `start`/`end` are the first and last hitting frames' timestamps, `best_time` the best
    frame's; `best_caption`, `best_box` (pixel x1, y1, x2, y2, or None for whole-frame tokens)
    and the ids describe the best-scoring token of that frame.
    """

    start: float
    end: float
    best_time: float
    score: float
    frame_id: int
    best_caption: str
    best_box: tuple[float, float, float, float] | None
    camera: str | None = None
    hits: int = 1  # frames in the range that hit
    kind: int = -1
    class_id: int = -1
    track_id: int = -1


@dataclass(frozen=True, slots=True)
class HitRun:
    """Indices into the frame arrays given to `find_runs`."""

    first: int
    last: int
    best: int
    score: float
    hits: int


def hit_threshold(
    scores: F32, *, margin: float, fraction: float, min_score: float | None
) -> float | None:
    """The score a frame needs to hit, or None when no frame has a finite score."""
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        return None
    best = float(finite.max())
    k = max(1, math.ceil(len(finite) * fraction))
    kth = float(np.partition(finite, len(finite) - k)[len(finite) - k])
    threshold = min(best - margin, kth)
    return threshold if min_score is None else max(threshold, min_score)


def find_runs(
    ts: F64,
    scores: F32,
    *,
    limit: int,
    margin: float = 0.05,
    fraction: float = 0.01,
    min_score: float | None = None,
    merge_gap_s: float = 2.0,
) -> list[HitRun]:
    """The best `limit` runs of hitting frames, best first.

    `ts` must be non-decreasing. Hits no more than `merge_gap_s` apart belong to one run.
    """
    if limit <= 0:
        return []
    threshold = hit_threshold(scores, margin=margin, fraction=fraction, min_score=min_score)
    if threshold is None:
        return []
    hit = np.flatnonzero(scores >= threshold)
    if not len(hit):
        return []
    hit_scores = scores[hit]
    starts = np.flatnonzero(np.diff(ts[hit], prepend=-np.inf) > merge_gap_s)
    run_best = np.maximum.reduceat(hit_scores, starts)
    ends = np.append(starts[1:], len(hit))
    order = np.argsort(-run_best, kind="stable")[:limit]
    runs = []
    for r in order.tolist():
        a, b = int(starts[r]), int(ends[r])
        best = a + int(np.argmax(hit_scores[a:b]))
        runs.append(HitRun(int(hit[a]), int(hit[b - 1]), int(hit[best]), float(run_best[r]), b - a))
    return runs

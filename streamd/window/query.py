"""Search requests and answers without the heavy parts: validation, errors, JSON shapes.

Kept free of torch and the store so that the HTTP API and the CLI import it cheaply (a daemon
that imports torch before its first database access starts a second later); the search itself
lives in `search`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamd.errors import QueryError
from streamd.perception.coco import COCO_CLASSES
from streamd.window.moments import Moment

__all__ = [
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "SearchResult",
    "UnknownCameraError",
    "iso",
    "moment_json",
    "result_json",
    "validate",
]

MAX_QUERY_CHARS = 500
MAX_LIMIT = 1000
_KINDS = ("scene", "object", "global", "tile")  # store.TokenKind, by value
_OBJECT = 1


class UnknownCameraError(QueryError):
    """The query names a camera that has no window."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: str
    moments: list[Moment]
    cameras: list[str]  # the windows searched
    embed_ms: float
    search_ms: float


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def validate(text: str, since: float | None, until: float | None, limit: int) -> str:
    """The query text, stripped; QueryError for what cannot be searched."""
    q = text.strip()
    if not q:
        raise QueryError('empty query: give the words to search for, e.g. "a person"')
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"query is {len(q)} characters long; at most {MAX_QUERY_CHARS}")
    if since is not None and until is not None and since > until:
        raise QueryError("inverted time range: since is after until")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return q


def _label(m: Moment) -> str | None:
    if m.kind == _OBJECT and 0 <= m.class_id < len(COCO_CLASSES):
        return COCO_CLASSES[m.class_id]
    return None


def moment_json(m: Moment, snapshot: str | None) -> dict[str, Any]:
    """A moment as the API and `streamd search --json` print it."""
    return {
        "camera": m.camera,
        "start": m.start,
        "end": m.end,
        "best_time": m.best_time,
        "start_iso": iso(m.start),
        "end_iso": iso(m.end),
        "best_time_iso": iso(m.best_time),
        "duration_s": round(m.end - m.start, 3),
        "score": round(m.score, 4),
        "caption": m.best_caption,
        "label": _label(m),
        "kind": _KINDS[m.kind] if 0 <= m.kind < len(_KINDS) else None,
        "box": None if m.best_box is None else [round(v, 1) for v in m.best_box],
        "track_id": m.track_id if m.track_id >= 0 else None,
        "hits": m.hits,
        "frame_id": m.frame_id,
        "snapshot": snapshot,
    }


def result_json(result: SearchResult, snapshot: Callable[[Moment], str | None]) -> dict[str, Any]:
    """A search result as the API returns it and `streamd search --json` prints it;
    `snapshot` gives each moment's snapshot URL or path (None: no thumbnail)."""
    return {
        "query": result.query,
        "cameras": result.cameras,
        "took_ms": round(result.embed_ms + result.search_ms, 3),
        "embed_ms": round(result.embed_ms, 3),
        "search_ms": round(result.search_ms, 3),
        "moments": [moment_json(m, snapshot(m)) for m in result.moments],
    }

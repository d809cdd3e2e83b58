"""One row of the event log as readers (CLI, HTTP API) see it, and the time conversions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def to_epoch(value: datetime) -> float:
    # Microseconds are all the database keeps; rounding hides float noise such as ...999999.
    return round(value.timestamp(), 6)


def finite(value: float) -> float:
    # JSON has no NaN/inf; a broken score must not make the whole event unpublishable.
    return value if math.isfinite(value) else 0.0


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One row of the event log, as the CLI and HTTP API see it."""

    id: str
    camera: str
    rule: str
    text: str
    severity: str
    started_at: datetime
    ended_at: datetime | None
    score: float
    top_score: float
    snapshot_path: Path | None
    description: str | None
    details: dict[str, Any]
    updated_at: datetime
    instance: str | None = None  # who analysed the camera (NULL before instances existed)

    @property
    def start_time(self) -> float:
        return to_epoch(self.started_at)

    @property
    def end_time(self) -> float | None:
        return None if self.ended_at is None else to_epoch(self.ended_at)

    @property
    def active(self) -> bool:
        return self.ended_at is None

    @property
    def has_snapshot(self) -> bool:
        return self.snapshot_path is not None

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict: times both as epoch seconds and as ISO 8601 UTC strings."""
        return {
            "id": self.id,
            "camera": self.camera,
            "rule": self.rule,
            "text": self.text,
            "severity": self.severity,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "duration_s": None
            if self.ended_at is None
            else round((self.ended_at - self.started_at).total_seconds(), 3),
            "score": self.score,
            "top_score": self.top_score,
            "has_snapshot": self.has_snapshot,
            "description": self.description,
            "details": self.details,
            "updated_at": self.updated_at.isoformat(),
            "instance": self.instance,
        }

"""The `retention:` section: how long events and snapshots are kept, and the health log."""

from __future__ import annotations

from pydantic import Field

from streamd.config.base import StrictModel


class RetentionConfig(StrictModel):
    """What is kept on disk and in SQL. Token windows are bounded by each camera's
    `window_tokens` (size) and `window.max_age_s` (age), evicted as frames arrive."""

    events_days: float = Field(
        30, gt=0, le=36500, description="Delete ended events (and their snapshots) older than this."
    )
    snapshots_days: float | None = Field(
        None,
        gt=0,
        le=36500,
        description="Delete event snapshots older than this, keeping the events (default: "
        "as long as their events).",
    )
    snapshots_max_mb: float = Field(
        1024,
        gt=0,
        description="Per camera: delete the oldest event snapshots beyond this many MB.",
    )
    interval_s: float = Field(
        3600, ge=10, le=86400, description="How often retention runs (first run 30 s after start)."
    )
    health_interval_s: float = Field(30, gt=0, description="Camera health log interval.")

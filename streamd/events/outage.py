"""What the event writer reports about a database outage: MQTT status, counters, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DatabaseStatus(BaseModel):
    """The retained JSON on `<prefix>/database`: whether event changes reach the database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["available", "unavailable"]
    since: float = Field(description="UTC epoch seconds when this state began.")
    reason: str | None = Field(None, description="Why the database is unavailable.")
    pending: int = Field(description="Event changes waiting for the database.")
    written: int = Field(0, description="Buffered changes written since the outage ended.")
    dropped: int = Field(0, description="Changes dropped during the outage (over budget).")


@dataclass(slots=True)
class WriterStats:
    """Counters for /metrics."""

    database_up: bool = True
    outages: int = 0
    buffered: int = 0  # changes that had to wait in the journal for the database
    written: int = 0  # changes committed
    dropped: int = 0  # changes given up (outage past its budget, journal full, bad data)
    journal_bytes: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class Outage:
    """The outage in progress, as the writer tracks it."""

    started: float  # monotonic
    started_wall: float
    reason: str
    written: int = 0
    dropped: int = 0
    over_budget_logged: bool = False


def metric_lines(stats: WriterStats, pending: int) -> list[str]:
    """Prometheus text lines for /metrics."""
    return [
        f"streamd_database_up {int(stats.database_up)}",
        f"streamd_database_outages_total {stats.outages}",
        f"streamd_event_changes_pending {pending}",
        f"streamd_event_changes_buffered_total {stats.buffered}",
        f"streamd_event_changes_written_total {stats.written}",
        f"streamd_event_changes_dropped_total {stats.dropped}",
        f"streamd_event_journal_bytes {stats.journal_bytes}",
    ]

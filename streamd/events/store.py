"""The event log (SQL): event changes in, event records out.

`EventStore.record` applies one change to the log and, in the same transaction, queues its MQTT
messages in the outbox (events/outbox.py), so a change that is in the log reaches the broker
eventually. The daemon does not call it directly: changes go through the `EventWriter`
(events/writer.py), which buffers them while the database is away. Recording is split in two
for that: `prepare` writes the snapshot and turns the change into plain data, `apply` is the
transaction, retried as often as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from streamd.errors import QueryError
from streamd.events.change import EventChange, PendingChange
from streamd.events.db import DB_ERRORS, db_error, write_engine
from streamd.events.ids import resolve_id
from streamd.events.models import Event, utcnow
from streamd.events.outbox import OutboxQueue
from streamd.events.record import EventRecord, to_datetime
from streamd.events.snapshot import snapshot_relpath, write_snapshot

log = logging.getLogger(__name__)

_DELETE_BATCH = 500


class EventStore:
    """SQL event log + its MQTT outbox (`self.outbox`) + snapshot files.

    `topic_prefix=None` records events without queueing any MQTT message (no broker configured).
    `snapshot_url_base` (e.g. "http://host:8080") fills `snapshot_url` in the MQTT payloads.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        snapshot_dir: Path,
        topic_prefix: str | None,
        *,
        snapshot_url_base: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.engine = engine
        self.snapshot_dir = snapshot_dir
        self.topic_prefix = topic_prefix
        self.instance = instance  # stamped on every event this store records
        self.outbox = OutboxQueue(engine, topic_prefix, snapshot_url_base, instance)
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(write_engine(engine), expire_on_commit=False)

    # -- recording -------------------------------------------------------------------------

    async def record(self, change: EventChange, severity: str = "warning") -> None:
        """Apply one event change to the log and queue its MQTT messages, atomically.

        Raises DatabaseError (and leaves no snapshot behind) when the database cannot take it.
        """
        pending = await self.prepare(change, severity)
        try:
            await self.apply(pending)
        except Exception:
            self.discard(pending)
            raise

    async def prepare(self, change: EventChange, severity: str = "warning") -> PendingChange:
        """Write the change's snapshot (if any) and return the change as plain data."""
        written = await self._maybe_write_snapshot(change)
        return PendingChange(
            kind=change.kind,
            event_id=change.event_id,
            camera=change.camera,
            rule_name=change.rule_name,
            rule_text=change.rule_text,
            severity=severity,
            start_time=change.start_time,
            end_time=change.end_time,
            score=float(change.score),
            top_score=float(change.top_score),
            description=change.description,
            details=_jsonable(change.details),
            snapshot=None if written is None else written.as_posix(),
            instance=self.instance,
        )

    def discard(self, pending: PendingChange) -> None:
        """Delete the snapshot a change that will never be recorded left behind."""
        if pending.snapshot is not None:
            with contextlib.suppress(OSError):
                (self.snapshot_dir / pending.snapshot).unlink()

    async def apply(self, pending: PendingChange) -> None:
        """The transaction of `record`: idempotent for `new` and `end`, so a retry is safe.

        `new` inserts the event, `update` and `end` update it. A repeated `new` or `end` is a
        no-op, and an `update`/`end` for an unknown id is recorded as if its `new` had been seen,
        so a retry or a lost `new` never loses the event.
        """
        try:
            async with self._write() as session, session.begin():
                queued = await self._apply(session, pending)
        except DB_ERRORS as exc:
            raise db_error(
                f"record {pending.kind} of event {pending.event_id}", self.engine.url, exc
            ) from exc
        if queued:
            self.outbox.new_messages.set()

    async def _maybe_write_snapshot(self, change: EventChange) -> Path | None:
        """Write the change's snapshot; returns its path relative to snapshot_dir, or None."""
        if change.snapshot is None:
            return None
        rel = snapshot_relpath(change.camera, change.event_id)
        if (self.snapshot_dir / rel).exists():
            # Already there (a repeated change): never rewrite, nor delete it on a failed commit.
            return None
        try:
            await asyncio.to_thread(
                write_snapshot, change.snapshot, self.snapshot_dir, change.event_id, change.camera
            )
        except (OSError, ValueError, cv2.error) as exc:
            # The event matters more than its picture: record it without one.
            log.warning("event %s: snapshot not written: %s", change.event_id, exc)
            return None
        return rel

    async def _apply(self, session: AsyncSession, change: PendingChange) -> bool:
        now = utcnow()
        outbox = self.outbox
        event_id, row = await resolve_id(session, change)
        if event_id != change.event_id:
            if row is None:
                log.warning(
                    "event %s: id already taken by another event; recorded as %s",
                    change.event_id,
                    event_id,
                )
            change = change.model_copy(update={"event_id": event_id})
        if change.kind == "new":
            if row is not None:
                log.debug("event %s: repeated new ignored", change.event_id)
                return False
            row = self._new_row(change, now)
            session.add(row)
            side = outbox.side(row)
            return outbox.add(session, row, "new", side, side)

        if row is None:
            log.warning(
                "event %s: %s without a recorded new; recording the event now",
                change.event_id,
                change.kind,
            )
            row = self._new_row(change, now)
            session.add(row)
        elif change.kind == "end" and row.ended_at is not None:
            log.debug("event %s: repeated end ignored", change.event_id)
            return False
        before = outbox.side(row)
        row.score = change.score
        row.top_score = max(row.top_score, change.top_score, change.score)
        if change.description is not None:
            row.description = change.description
        if change.details:
            row.details = {**row.details, **change.details}
        if change.snapshot is not None and row.snapshot_path is None:
            row.snapshot_path = change.snapshot
        if change.kind == "end":
            ended = to_datetime(change.end_time) if change.end_time is not None else now
            row.ended_at = max(ended, row.started_at)
        row.updated_at = now
        return outbox.add(session, row, change.kind, before, outbox.side(row))

    @staticmethod
    def _new_row(change: PendingChange, now: datetime) -> Event:
        return Event(
            id=change.event_id,
            camera=change.camera,
            rule=change.rule_name,
            text=change.rule_text,
            severity=change.severity,
            started_at=to_datetime(change.start_time),
            # Open even for an `end` of an unknown event: the caller applies the end after this.
            ended_at=None,
            score=change.score,
            top_score=max(change.top_score, change.score),
            snapshot_path=change.snapshot,
            description=change.description,
            details=dict(change.details),
            updated_at=now,
            instance=change.instance,
        )

    async def close_open(
        self, end_time: float, *, camera: str | None = None, instance: str | None = None
    ) -> list[str]:
        """End every event still open (at shutdown, or at start after a crash); returns their ids.

        `camera` / `instance` narrow it down: with instances sharing the database, an instance
        ends only its own leftovers at start, and a camera's when it takes the camera over.
        Each gets an `end` envelope and its state topic goes OFF, like a rule-driven end.
        """
        where: list[ColumnElement[bool]] = [Event.ended_at.is_(None)]
        if camera is not None:
            where.append(Event.camera == camera)
        if instance is not None:
            where.append(Event.instance == instance)
        ended = to_datetime(end_time)
        now = utcnow()
        ids: list[str] = []
        queued = False
        outbox = self.outbox
        try:
            async with self._write() as session, session.begin():
                rows = (
                    await session.scalars(
                        select(Event).where(*where).order_by(Event.started_at).with_for_update()
                    )
                ).all()
                for row in rows:
                    before = outbox.side(row)
                    row.ended_at = max(ended, row.started_at)
                    row.updated_at = now
                    queued = outbox.add(session, row, "end", before, outbox.side(row)) or queued
                    ids.append(row.id)
        except DB_ERRORS as exc:
            raise db_error("close open events", self.engine.url, exc) from exc
        if queued:
            outbox.new_messages.set()
        return ids

    # -- reading ---------------------------------------------------------------------------

    async def query(
        self,
        camera: str | None = None,
        rule: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Events newest first. `since`/`until` bound the start time: since <= start < until."""
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise QueryError(f"{name} must carry a time zone (got naive {value.isoformat()})")
        if since is not None and until is not None and since >= until:
            raise QueryError(
                f"empty time range: since {since.isoformat()} is not before until "
                f"{until.isoformat()}"
            )
        if limit < 1:
            raise QueryError(f"limit must be at least 1, got {limit}")
        stmt = select(Event)
        if camera is not None:
            stmt = stmt.where(Event.camera == camera)
        if rule is not None:
            stmt = stmt.where(Event.rule == rule)
        if since is not None:
            stmt = stmt.where(Event.started_at >= since)
        if until is not None:
            stmt = stmt.where(Event.started_at < until)
        stmt = stmt.order_by(Event.started_at.desc(), Event.id.desc()).limit(limit)
        try:
            async with self._read() as session:
                rows = (await session.scalars(stmt)).all()
        except DB_ERRORS as exc:
            raise db_error("query events", self.engine.url, exc) from exc
        return [self._record(row) for row in rows]

    async def get(self, event_id: str) -> EventRecord | None:
        try:
            async with self._read() as session:
                row = await session.get(Event, event_id)
        except DB_ERRORS as exc:
            raise db_error(f"read event {event_id}", self.engine.url, exc) from exc
        return None if row is None else self._record(row)

    def _record(self, row: Event) -> EventRecord:
        snapshot = None if row.snapshot_path is None else self.snapshot_dir / row.snapshot_path
        return EventRecord(
            id=row.id,
            camera=row.camera,
            rule=row.rule,
            text=row.text,
            severity=row.severity,
            started_at=row.started_at,
            ended_at=row.ended_at,
            score=row.score,
            top_score=row.top_score,
            snapshot_path=snapshot,
            description=row.description,
            details=dict(row.details or {}),
            updated_at=row.updated_at,
            instance=row.instance,
        )

    # -- retention -------------------------------------------------------------------------

    async def delete_ended_before(self, cutoff: datetime) -> int:
        """Delete events that ended before `cutoff`, and their snapshots. Open events stay."""
        if cutoff.tzinfo is None:
            raise QueryError(f"cutoff must carry a time zone (got naive {cutoff.isoformat()})")
        total = 0
        while True:
            try:
                async with self._write() as session, session.begin():
                    rows = (
                        await session.execute(
                            select(Event.id, Event.snapshot_path)
                            .where(Event.ended_at.is_not(None), Event.ended_at < cutoff)
                            .order_by(Event.ended_at)
                            .limit(_DELETE_BATCH)
                        )
                    ).all()
                    if rows:
                        await session.execute(
                            delete(Event).where(Event.id.in_([r.id for r in rows]))
                        )
            except DB_ERRORS as exc:
                raise db_error("delete old events", self.engine.url, exc) from exc
            # Files go after the commit: a crash in between leaves an orphan file, never a row
            # pointing at a deleted file.
            paths = [self.snapshot_dir / r.snapshot_path for r in rows if r.snapshot_path]
            if paths:
                await asyncio.to_thread(_unlink_all, paths)
            total += len(rows)
            if len(rows) < _DELETE_BATCH:
                return total


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    """`details` as plain JSON values: numpy scalars/arrays, dataclasses, paths and datetimes are
    converted, and NaN/inf become null (PostgreSQL's json type rejects them)."""

    def conv(obj: Any, depth: int) -> Any:
        if depth > 32:
            return str(obj)
        if obj is None or isinstance(obj, (bool, int, str)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else None
        if isinstance(obj, dict):
            return {str(k): conv(v, depth + 1) for k, v in obj.items()}
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [conv(v, depth + 1) for v in obj]
        if hasattr(obj, "tolist"):
            return conv(obj.tolist(), depth + 1)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return conv(dataclasses.asdict(obj), depth + 1)
        if isinstance(obj, datetime):
            return obj.isoformat()
        return str(obj)

    result: dict[str, Any] = conv(details, 0)
    return result


def _unlink_all(paths: Sequence[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot delete snapshot %s: %s", path, exc.strerror)

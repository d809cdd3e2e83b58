"""The event log (SQL) and the durable MQTT outbox, written together in one transaction.

`EventStore.record` is the one entry point the rules stage uses. Every change it records also
queues its MQTT messages in the `outbox` table in the same transaction, so a change that is in the
log reaches the broker eventually, whatever the broker was doing at the time; `MqttPublisher`
drains the outbox in id order and marks rows sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from streamd.errors import QueryError
from streamd.events.change import EventChange
from streamd.events.db import DatabaseError, safe_url, write_engine
from streamd.events.models import Event, Outbox, utcnow
from streamd.events.payload import EnvelopeType, EventEnvelope, EventSide
from streamd.events.snapshot import snapshot_relpath, write_snapshot
from streamd.events.topics import STATE_OFF, STATE_ON, events_topic, state_topic

log = logging.getLogger(__name__)

_DELETE_BATCH = 500
# asyncpg's connect errors (refused, timed out) reach us as OSError, not wrapped by SQLAlchemy.
_DB_ERRORS = (SQLAlchemyError, OSError)


def to_datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def to_epoch(value: datetime) -> float:
    # Microseconds are all the database keeps; rounding hides float noise such as ...999999.
    return round(value.timestamp(), 6)


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
        }


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued MQTT message."""

    id: int
    topic: str
    payload: str
    qos: int
    retain: bool
    created_at: datetime


class EventStore:
    """SQL event log + MQTT outbox + snapshot files.

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
    ) -> None:
        self.engine = engine
        self.snapshot_dir = snapshot_dir
        self.topic_prefix = topic_prefix
        self.snapshot_url_base = snapshot_url_base.rstrip("/") if snapshot_url_base else None
        # Set whenever outbox rows are committed; the publisher clears it before each drain.
        self.new_messages = asyncio.Event()
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(write_engine(engine), expire_on_commit=False)

    # -- recording -------------------------------------------------------------------------

    async def record(self, change: EventChange, severity: str = "warning") -> None:
        """Apply one event change to the log and queue its MQTT messages, atomically.

        `new` inserts the event (after writing its snapshot), `update` and `end` update it. A
        repeated `new` or `end` is a no-op, and an `update`/`end` for an unknown id is recorded
        as if its `new` had been seen, so a retry or a lost `new` never loses the event.
        """
        written = await self._maybe_write_snapshot(change)
        try:
            async with self._write() as session, session.begin():
                queued = await self._apply(session, change, severity, written)
        except _DB_ERRORS as exc:
            if written is not None:
                with contextlib.suppress(OSError):
                    (self.snapshot_dir / written).unlink()
            raise DatabaseError(
                f"cannot record {change.kind} of event {change.event_id} "
                f"in {safe_url(self.engine.url)}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        if queued:
            self.new_messages.set()

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

    async def _apply(
        self, session: AsyncSession, change: EventChange, severity: str, snapshot: Path | None
    ) -> bool:
        now = utcnow()
        row = await session.get(Event, change.event_id, with_for_update=True)
        if change.kind == "new":
            if row is not None:
                log.debug("event %s: repeated new ignored", change.event_id)
                return False
            row = self._new_row(change, severity, snapshot, now)
            session.add(row)
            side = self._side(row)
            return self._queue(session, row, "new", side, side)

        if row is None:
            log.warning(
                "event %s: %s without a recorded new; recording the event now",
                change.event_id,
                change.kind,
            )
            row = self._new_row(change, severity, snapshot, now)
            session.add(row)
        elif change.kind == "end" and row.ended_at is not None:
            log.debug("event %s: repeated end ignored", change.event_id)
            return False
        before = self._side(row)
        row.score = float(change.score)
        row.top_score = max(row.top_score, float(change.top_score), float(change.score))
        if change.description is not None:
            row.description = change.description
        if change.details:
            row.details = {**row.details, **_jsonable(change.details)}
        if snapshot is not None and row.snapshot_path is None:
            row.snapshot_path = snapshot.as_posix()
        if change.kind == "end":
            ended = to_datetime(change.end_time) if change.end_time is not None else now
            row.ended_at = max(ended, row.started_at)
        row.updated_at = now
        return self._queue(session, row, change.kind, before, self._side(row))

    @staticmethod
    def _new_row(change: EventChange, severity: str, snapshot: Path | None, now: datetime) -> Event:
        return Event(
            id=change.event_id,
            camera=change.camera,
            rule=change.rule_name,
            text=change.rule_text,
            severity=severity,
            started_at=to_datetime(change.start_time),
            # Open even for an `end` of an unknown event: the caller applies the end after this.
            ended_at=None,
            score=float(change.score),
            top_score=max(float(change.top_score), float(change.score)),
            snapshot_path=None if snapshot is None else snapshot.as_posix(),
            description=change.description,
            details=_jsonable(change.details),
            updated_at=now,
        )

    def _side(self, row: Event) -> EventSide:
        has_snapshot = row.snapshot_path is not None
        url = None
        if has_snapshot and self.snapshot_url_base:
            url = f"{self.snapshot_url_base}/api/events/{row.id}/snapshot.jpg"
        return EventSide(
            id=row.id,
            camera=row.camera,
            label=row.rule,
            rule=row.text,
            start_time=to_epoch(row.started_at),
            end_time=None if row.ended_at is None else to_epoch(row.ended_at),
            score=_finite(row.score),
            top_score=_finite(row.top_score),
            has_snapshot=has_snapshot,
            description=row.description,
            severity=row.severity,
            snapshot_url=url,
            frame_time=to_epoch(row.ended_at if row.ended_at is not None else row.updated_at),
        )

    def _queue(
        self,
        session: AsyncSession,
        row: Event,
        kind: EnvelopeType,
        before: EventSide,
        after: EventSide,
    ) -> bool:
        """Add the change's outbox rows to the session; True when any were added."""
        prefix = self.topic_prefix
        if prefix is None:
            return False
        envelope = EventEnvelope(type=kind, before=before, after=after)
        session.add(
            Outbox(topic=events_topic(prefix), payload=envelope.to_json(), qos=1, retain=False)
        )
        if kind in ("new", "end"):
            session.add(
                Outbox(
                    topic=state_topic(prefix, row.camera, row.rule),
                    payload=STATE_ON if kind == "new" else STATE_OFF,
                    qos=1,
                    retain=True,
                )
            )
        return True

    async def close_open(self, end_time: float) -> list[str]:
        """End every event still open (at shutdown, or at start after a crash); returns their ids.

        Each gets an `end` envelope and its state topic goes OFF, like a rule-driven end.
        """
        ended = to_datetime(end_time)
        now = utcnow()
        ids: list[str] = []
        queued = False
        try:
            async with self._write() as session, session.begin():
                rows = (
                    await session.scalars(
                        select(Event)
                        .where(Event.ended_at.is_(None))
                        .order_by(Event.started_at)
                        .with_for_update()
                    )
                ).all()
                for row in rows:
                    before = self._side(row)
                    row.ended_at = max(ended, row.started_at)
                    row.updated_at = now
                    queued = self._queue(session, row, "end", before, self._side(row)) or queued
                    ids.append(row.id)
        except _DB_ERRORS as exc:
            raise self._error("close open events", exc) from exc
        if queued:
            self.new_messages.set()
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
        except _DB_ERRORS as exc:
            raise self._error("query events", exc) from exc
        return [self._record(row) for row in rows]

    async def get(self, event_id: str) -> EventRecord | None:
        try:
            async with self._read() as session:
                row = await session.get(Event, event_id)
        except _DB_ERRORS as exc:
            raise self._error(f"read event {event_id}", exc) from exc
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
            except _DB_ERRORS as exc:
                raise self._error("delete old events", exc) from exc
            # Files go after the commit: a crash in between leaves an orphan file, never a row
            # pointing at a deleted file.
            paths = [self.snapshot_dir / r.snapshot_path for r in rows if r.snapshot_path]
            if paths:
                await asyncio.to_thread(_unlink_all, paths)
            total += len(rows)
            if len(rows) < _DELETE_BATCH:
                return total

    # -- outbox ----------------------------------------------------------------------------

    async def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Unsent outbox rows, oldest first."""
        stmt = select(Outbox).where(Outbox.sent_at.is_(None)).order_by(Outbox.id).limit(limit)
        try:
            async with self._read() as session:
                rows = (await session.scalars(stmt)).all()
        except _DB_ERRORS as exc:
            raise self._error("read the outbox", exc) from exc
        return [
            OutboxRow(
                id=r.id,
                topic=r.topic,
                payload=r.payload,
                qos=r.qos,
                retain=r.retain,
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def pending_count(self) -> int:
        stmt = select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))
        try:
            async with self._read() as session:
                return int((await session.execute(stmt)).scalar_one())
        except _DB_ERRORS as exc:
            raise self._error("count the outbox", exc) from exc

    async def mark_sent(self, ids: Iterable[int]) -> None:
        id_list = list(ids)
        if not id_list:
            return
        try:
            async with self._write() as session, session.begin():
                await session.execute(
                    update(Outbox).where(Outbox.id.in_(id_list)).values(sent_at=utcnow())
                )
        except _DB_ERRORS as exc:
            raise self._error("mark outbox rows sent", exc) from exc

    async def purge_sent(self, older_than: datetime) -> int:
        """Delete outbox rows sent before `older_than`; returns how many."""
        if older_than.tzinfo is None:
            raise QueryError(f"older_than must carry a time zone (got {older_than.isoformat()})")
        try:
            async with self._write() as session, session.begin():
                result = await session.execute(
                    delete(Outbox).where(Outbox.sent_at.is_not(None), Outbox.sent_at < older_than)
                )
        except _DB_ERRORS as exc:
            raise self._error("purge the outbox", exc) from exc
        return int(getattr(result, "rowcount", 0) or 0)

    def _error(self, what: str, exc: Exception) -> DatabaseError:
        return DatabaseError(
            f"cannot {what} in {safe_url(self.engine.url)}: {type(exc).__name__}: "
            f"{_first_line(exc)}"
        )


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the statement and its parameters on later lines; keep logs short.
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else ""


def _finite(value: float) -> float:
    # JSON has no NaN/inf; a broken score must not make the whole event unpublishable.
    return value if math.isfinite(value) else 0.0


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

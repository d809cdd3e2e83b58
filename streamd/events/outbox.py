"""The durable MQTT outbox: what each event change sends, queued in SQL with the change itself.

`OutboxQueue.add` runs inside the event log's transaction, so a change that is in the log reaches
the broker eventually, whatever the broker was doing at the time; `MqttPublisher` reads `pending`
in id order and marks acknowledged rows sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from streamd.errors import QueryError
from streamd.events.db import DB_ERRORS, db_error, write_engine
from streamd.events.models import Event, Outbox, utcnow
from streamd.events.payload import EnvelopeType, EventEnvelope, EventSide
from streamd.events.record import finite, to_epoch
from streamd.events.topics import STATE_OFF, STATE_ON, events_topic, state_topic


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued MQTT message."""

    id: int
    topic: str
    payload: str
    qos: int
    retain: bool
    created_at: datetime


class OutboxQueue:
    """The outbox table: queue (inside the caller's transaction), read, mark sent, purge.

    `topic_prefix=None` queues nothing (no broker configured). `snapshot_url_base` (e.g.
    "http://host:8080") fills `snapshot_url` in the payloads.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        topic_prefix: str | None,
        snapshot_url_base: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.engine = engine
        # Instances share the table; each queues and sends only its own rows (None: all rows).
        self.instance = instance
        self.topic_prefix = topic_prefix
        self.snapshot_url_base = snapshot_url_base.rstrip("/") if snapshot_url_base else None
        # Set whenever outbox rows are committed; the publisher clears it before each drain.
        self.new_messages = asyncio.Event()
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(write_engine(engine), expire_on_commit=False)

    def side(self, row: Event) -> EventSide:
        """The event as one side (`before`/`after`) of an envelope."""
        has_snapshot = row.snapshot_path is not None
        details = row.details if isinstance(row.details, dict) else {}
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
            score=finite(row.score),
            top_score=finite(row.top_score),
            has_snapshot=has_snapshot,
            description=row.description,
            severity=row.severity,
            snapshot_url=url,
            frame_time=to_epoch(row.ended_at if row.ended_at is not None else row.updated_at),
            current_zones=_names(details.get("zones")),
            entered_zones=_names(details.get("entered_zones")),
            instance=row.instance,
        )

    def add(
        self,
        session: AsyncSession,
        row: Event,
        kind: EnvelopeType,
        before: EventSide,
        after: EventSide,
    ) -> bool:
        """Add the change's rows to the caller's session; True when any were added."""
        prefix = self.topic_prefix
        if prefix is None:
            return False
        envelope = EventEnvelope(type=kind, before=before, after=after)
        session.add(
            Outbox(
                topic=events_topic(prefix),
                payload=envelope.to_json(),
                qos=1,
                retain=False,
                instance=self.instance,
            )
        )
        if kind in ("new", "end"):
            session.add(
                Outbox(
                    topic=state_topic(prefix, row.camera, row.rule),
                    payload=STATE_ON if kind == "new" else STATE_OFF,
                    qos=1,
                    retain=True,
                    instance=self.instance,
                )
            )
        return True

    def _mine(self) -> ColumnElement[bool]:
        if self.instance is None:
            return true()
        # NULL: queued before instances existed, when one instance had the table to itself.
        return or_(Outbox.instance == self.instance, Outbox.instance.is_(None))

    async def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Unsent outbox rows, oldest first."""
        stmt = (
            select(Outbox)
            .where(Outbox.sent_at.is_(None), self._mine())
            .order_by(Outbox.id)
            .limit(limit)
        )
        try:
            async with self._read() as session:
                rows = (await session.scalars(stmt)).all()
        except DB_ERRORS as exc:
            raise db_error("read the outbox", self.engine.url, exc) from exc
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
        stmt = (
            select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None), self._mine())
        )
        try:
            async with self._read() as session:
                return int((await session.execute(stmt)).scalar_one())
        except DB_ERRORS as exc:
            raise db_error("count the outbox", self.engine.url, exc) from exc

    async def mark_sent(self, ids: Iterable[int]) -> None:
        id_list = list(ids)
        if not id_list:
            return
        try:
            async with self._write() as session, session.begin():
                await session.execute(
                    update(Outbox).where(Outbox.id.in_(id_list)).values(sent_at=utcnow())
                )
        except DB_ERRORS as exc:
            raise db_error("mark outbox rows sent", self.engine.url, exc) from exc

    async def purge_sent(self, older_than: datetime) -> int:
        """Delete outbox rows sent before `older_than`; returns how many."""
        if older_than.tzinfo is None:
            raise QueryError(f"older_than must carry a time zone (got {older_than.isoformat()})")
        try:
            async with self._write() as session, session.begin():
                result = await session.execute(
                    delete(Outbox).where(Outbox.sent_at.is_not(None), Outbox.sent_at < older_than)
                )
        except DB_ERRORS as exc:
            raise db_error("purge the outbox", self.engine.url, exc) from exc
        return int(getattr(result, "rowcount", 0) or 0)


def _names(value: object) -> list[str]:
    """Zone names from an event's details (absent for scene-level events)."""
    return [str(v) for v in value] if isinstance(value, list) else []

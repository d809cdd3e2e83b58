"""EventStore on real databases: SQLite in tmp_path and PostgreSQL on 127.0.0.1:5432.

Each PostgreSQL test gets a database of its own (CREATE DATABASE streamd_test_<uuid>, dropped
afterwards); STREAMD_TEST_PG overrides the server DSN. Without a server those cases skip.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import cv2
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from streamd.errors import QueryError
from streamd.events.change import EventChange, Snapshot, new_event_id
from streamd.events.db import DatabaseError, current_revision, downgrade, make_engine, upgrade
from streamd.events.models import Base
from streamd.events.payload import EventEnvelope
from streamd.events.store import EventStore
from streamd.perception.geometry import Box

PG_DSN = os.environ.get("STREAMD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PREFIX = "streamd-test"
T0 = 1_764_082_000.0  # 2025-11-25T14:46:40Z
CONTRACT_FIELDS = {
    "id",
    "camera",
    "label",
    "rule",
    "start_time",
    "end_time",
    "score",
    "top_score",
    "has_snapshot",
    "description",
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        # A directory that does not exist yet: make_engine/upgrade must create it.
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'streamd.db'}"
        return
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {type(exc).__name__}: {exc}")
    name = f"streamd_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(PG_DSN).set(drivername="postgresql+asyncpg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(db_url)
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


@pytest.fixture
def store(engine: AsyncEngine, snapshot_dir: Path) -> EventStore:
    return EventStore(engine, snapshot_dir, PREFIX, snapshot_url_base="http://127.0.0.1:8080/")


def frame(width: int = 320, height: int = 240) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (40, 120, 200)
    return image


def change(
    kind: str,
    event_id: str,
    *,
    camera: str = "lobby",
    rule: str = "unattended-bag",
    start: float = T0,
    end: float | None = None,
    score: float = 0.5,
    top: float | None = None,
    snapshot: Snapshot | None = None,
    description: str | None = None,
    details: dict[str, Any] | None = None,
) -> EventChange:
    return EventChange(
        kind=kind,  # type: ignore[arg-type]
        event_id=event_id,
        camera=camera,
        rule_name=rule,
        rule_text=f"alert when {rule} (text)",
        start_time=start,
        end_time=end,
        score=score,
        top_score=score if top is None else top,
        snapshot=snapshot,
        description=description,
        details=details or {},
    )


def envelopes(rows: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in rows if r.topic == f"{PREFIX}/events"]


async def test_lifecycle_snapshot_and_outbox(store: EventStore, snapshot_dir: Path) -> None:
    eid = new_event_id(T0)
    snap = Snapshot(
        frame(), boxes=(("bag", Box(100, 120, 160, 200)), ("person", Box(0, 0, 50, 90)))
    )
    await store.record(
        change(
            "new", eid, score=0.61, snapshot=snap, details={"plan": "object(bag)", "n": np.int64(3)}
        ),
        severity="critical",
    )
    assert store.outbox.new_messages.is_set()
    await store.record(change("update", eid, score=0.9, description="a black bag, nobody near"))
    await store.record(change("update", eid, score=0.7, details={"frames": 12}))
    await store.record(change("end", eid, end=T0 + 42.25, score=0.2))

    rec = await store.get(eid)
    assert rec is not None
    assert (rec.camera, rec.rule, rec.severity) == ("lobby", "unattended-bag", "critical")
    assert rec.start_time == pytest.approx(T0)
    assert rec.end_time == pytest.approx(T0 + 42.25)
    assert rec.started_at.tzinfo is not None
    assert rec.score == pytest.approx(0.2)
    assert rec.top_score == pytest.approx(0.9)
    assert rec.description == "a black bag, nobody near"
    assert rec.details == {"plan": "object(bag)", "n": 3, "frames": 12}

    # The snapshot: a decodable JPEG of the frame's size, with the boxes drawn (red pixels).
    assert rec.snapshot_path == snapshot_dir / "lobby" / f"{eid}.jpg"
    assert rec.snapshot_path.is_file()
    image = cv2.imread(str(rec.snapshot_path))
    assert image is not None
    assert image.shape == (240, 320, 3)
    b, g, r = (int(v) for v in image[120, 100])  # on the bag box's left edge
    assert r > 180, (b, g, r)
    assert max(g, b) < 80, (b, g, r)
    assert not list((snapshot_dir / "lobby").glob("*.tmp")), "temporary file left behind"

    doc = rec.to_json_dict()
    assert doc["start_time"] == pytest.approx(T0)
    assert doc["started_at"] == "2025-11-25T14:46:40+00:00"
    assert doc["ended_at"] == "2025-11-25T14:47:22.250000+00:00"
    assert doc["duration_s"] == pytest.approx(42.25)
    assert doc["has_snapshot"] is True
    json.dumps(doc)  # JSON-ready as is

    rows = await store.outbox.pending()
    assert [(r.topic, r.qos, r.retain) for r in rows] == [
        (f"{PREFIX}/events", 1, False),
        (f"{PREFIX}/lobby/unattended-bag/state", 1, True),
        (f"{PREFIX}/events", 1, False),
        (f"{PREFIX}/events", 1, False),
        (f"{PREFIX}/events", 1, False),
        (f"{PREFIX}/lobby/unattended-bag/state", 1, True),
    ]
    assert [r.payload for r in rows if r.retain] == ["ON", "OFF"]
    assert [r.id for r in rows] == sorted(r.id for r in rows)

    new, up1, up2, end = envelopes(rows)
    for env in (new, up1, up2, end):
        EventEnvelope.model_validate(env)
        assert env["before"].keys() >= CONTRACT_FIELDS
        assert env["after"].keys() >= CONTRACT_FIELDS
    assert [e["type"] for e in (new, up1, up2, end)] == ["new", "update", "update", "end"]
    assert new["before"] == new["after"]
    after = new["after"]
    assert after["id"] == eid
    assert after["camera"] == "lobby"
    assert after["label"] == "unattended-bag"
    assert after["rule"] == "alert when unattended-bag (text)"
    assert after["end_time"] is None
    assert after["start_time"] == pytest.approx(T0)
    assert after["has_snapshot"] is True
    assert after["severity"] == "critical"
    assert after["snapshot_url"] == f"http://127.0.0.1:8080/api/events/{eid}/snapshot.jpg"
    assert (up1["before"]["score"], up1["after"]["score"]) == (0.61, 0.9)
    assert up1["after"]["description"] == "a black bag, nobody near"
    assert (up2["before"]["top_score"], up2["after"]["top_score"]) == (0.9, 0.9)
    assert end["before"]["end_time"] is None
    assert end["after"]["end_time"] == pytest.approx(T0 + 42.25)
    assert end["before"] == up2["after"]

    await store.outbox.mark_sent(r.id for r in rows[:2])
    assert [r.id for r in await store.outbox.pending()] == [r.id for r in rows[2:]]
    assert await store.outbox.pending_count() == 4
    await store.outbox.mark_sent([r.id for r in rows])
    assert await store.outbox.pending() == []
    # Sent rows are kept for a while, then purged.
    assert await store.outbox.purge_sent(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await store.outbox.purge_sent(datetime.now(UTC) + timedelta(seconds=1)) == 6


async def test_repeats_and_unknown_events_are_not_lost(store: EventStore) -> None:
    eid = new_event_id(T0)
    await store.record(change("new", eid))
    await store.record(change("new", eid))  # a retry of the same change
    await store.record(change("end", eid, end=T0 + 5))
    await store.record(change("end", eid, end=T0 + 9))  # ignored: the first end stands
    # An update for an event whose `new` never arrived records the event.
    lost = new_event_id(T0 + 1)
    await store.record(change("update", lost, start=T0 + 1, score=0.8))
    lost_end = new_event_id(T0 + 2)
    await store.record(change("end", lost_end, start=T0 + 2, end=T0 + 3))

    rec = await store.get(eid)
    assert rec is not None
    assert rec.end_time == pytest.approx(T0 + 5)
    got = await store.get(lost)
    assert got is not None
    assert got.active
    assert got.score == pytest.approx(0.8)
    got_end = await store.get(lost_end)
    assert got_end is not None
    assert got_end.end_time == pytest.approx(T0 + 3)
    types = [e["type"] for e in envelopes(await store.outbox.pending())]
    assert types == ["new", "end", "update", "end"]


async def test_query_filters(store: EventStore) -> None:
    specs = [
        # (camera, rule, start offset s, ended)
        ("lobby", "bag", 0, True),
        ("lobby", "crowd", 60, True),
        ("door", "bag", 120, False),
        ("door", "van", 180, True),
        ("lobby", "bag", 240, False),
    ]
    ids = []
    for camera, rule, offset, ended in specs:
        eid = new_event_id(T0 + offset)
        ids.append(eid)
        await store.record(change("new", eid, camera=camera, rule=rule, start=T0 + offset))
        if ended:
            await store.record(
                change("end", eid, camera=camera, rule=rule, start=T0 + offset, end=T0 + offset + 9)
            )

    def t(offset: float) -> datetime:
        return datetime.fromtimestamp(T0 + offset, UTC)

    assert [r.id for r in await store.query()] == ids[::-1]  # newest first
    assert [r.id for r in await store.query(camera="lobby")] == [ids[4], ids[1], ids[0]]
    assert [r.id for r in await store.query(rule="bag")] == [ids[4], ids[2], ids[0]]
    assert [r.id for r in await store.query(camera="door", rule="bag")] == [ids[2]]
    assert [r.id for r in await store.query(since=t(60))] == [ids[4], ids[3], ids[2], ids[1]]
    assert [r.id for r in await store.query(until=t(120))] == [ids[1], ids[0]]
    assert [r.id for r in await store.query(since=t(30), until=t(200))] == ids[3:0:-1]
    assert [r.id for r in await store.query(limit=2)] == [ids[4], ids[3]]
    assert await store.query(camera="nowhere") == []
    # Any time zone works; only the instant matters.
    cet = t(60).astimezone(datetime.now().astimezone().tzinfo)
    assert len(await store.query(since=cet)) == 4
    assert await store.get("no-such-id") is None

    with pytest.raises(QueryError, match="time zone"):
        await store.query(since=datetime(2025, 11, 25, 14, 0))  # naive on purpose
    with pytest.raises(QueryError, match="empty time range"):
        await store.query(since=t(100), until=t(50))
    with pytest.raises(QueryError, match="limit"):
        await store.query(limit=0)


async def test_close_open_ends_active_events(store: EventStore) -> None:
    a, b, c = new_event_id(T0), new_event_id(T0 + 1), new_event_id(T0 + 2)
    await store.record(change("new", a, camera="lobby", rule="bag"))
    await store.record(change("new", b, camera="door", rule="van", start=T0 + 1))
    await store.record(change("new", c, camera="lobby", rule="crowd", start=T0 + 2))
    await store.record(change("end", c, camera="lobby", rule="crowd", start=T0 + 2, end=T0 + 4))
    await store.outbox.mark_sent(r.id for r in await store.outbox.pending())
    store.outbox.new_messages.clear()

    closed = await store.close_open(T0 + 100)
    assert sorted(closed) == sorted([a, b])
    assert store.outbox.new_messages.is_set()
    for eid in (a, b):
        rec = await store.get(eid)
        assert rec is not None
        assert rec.end_time == pytest.approx(T0 + 100)
    rows = await store.outbox.pending()
    ends = envelopes(rows)
    assert {e["after"]["id"] for e in ends} == {a, b}
    assert all(e["type"] == "end" and e["before"]["end_time"] is None for e in ends)
    states = {r.topic: r.payload for r in rows if r.retain}
    assert states == {f"{PREFIX}/lobby/bag/state": "OFF", f"{PREFIX}/door/van/state": "OFF"}
    assert await store.close_open(T0 + 200) == []


async def test_retention_deletes_ended_events_and_snapshots(
    store: EventStore, snapshot_dir: Path
) -> None:
    old_ended, old_open, recent = new_event_id(T0), new_event_id(T0 + 1), new_event_id(T0 + 2)
    snap = Snapshot(frame(64, 48))
    await store.record(change("new", old_ended, snapshot=snap))
    await store.record(change("end", old_ended, end=T0 + 10))
    await store.record(change("new", old_open, start=T0 + 1, snapshot=snap))
    await store.record(change("new", recent, start=T0 + 2, snapshot=snap))
    await store.record(change("end", recent, start=T0 + 2, end=T0 + 5000))
    files = {eid: snapshot_dir / "lobby" / f"{eid}.jpg" for eid in (old_ended, old_open, recent)}
    assert all(p.is_file() for p in files.values())

    cutoff = datetime.fromtimestamp(T0 + 1000, UTC)
    assert await store.delete_ended_before(cutoff) == 1
    assert await store.get(old_ended) is None
    assert not files[old_ended].exists()
    assert await store.get(old_open) is not None
    assert files[old_open].is_file()
    assert await store.get(recent) is not None
    assert files[recent].is_file()
    assert await store.delete_ended_before(cutoff) == 0
    with pytest.raises(QueryError):
        await store.delete_ended_before(datetime(2025, 1, 1))  # naive on purpose


async def test_no_topic_prefix_queues_nothing(engine: AsyncEngine, snapshot_dir: Path) -> None:
    store = EventStore(engine, snapshot_dir, topic_prefix=None)
    eid = new_event_id(T0)
    await store.record(change("new", eid))
    await store.record(change("end", eid, end=T0 + 1))
    assert await store.outbox.pending() == []
    assert not store.outbox.new_messages.is_set()
    assert (await store.get(eid)) is not None


def _schema_diff(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_migrations_match_models_and_downgrade(db_url: str, snapshot_dir: Path) -> None:
    await upgrade(db_url)
    assert await current_revision(db_url) == "0003"
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert {"events", "outbox", "rules", "camera_leases", "cluster_instances"} <= (
                await conn.run_sync(_tables)
            )
            # The models and the migrations describe the same schema.
            assert await conn.run_sync(_schema_diff) == []

        # each step down is real: 0003 drops only the cluster tables and instance columns
        await downgrade(db_url, "0002")
        async with engine.connect() as conn:
            assert not {"camera_leases", "cluster_instances"} & await conn.run_sync(_tables)
            assert "rules" in await conn.run_sync(_tables)

        # 0002 drops only the rules table
        await downgrade(db_url, "0001")
        assert await current_revision(db_url) == "0001"
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            assert "rules" not in tables
            assert {"events", "outbox"} <= tables

        await downgrade(db_url, "base")
        assert await current_revision(db_url) is None
        async with engine.connect() as conn:
            assert not {"events", "outbox", "rules"} & await conn.run_sync(_tables)

        await upgrade(db_url)
        store = EventStore(engine, snapshot_dir, PREFIX)
        eid = new_event_id(T0)
        await store.record(change("new", eid))
        assert [r.id for r in await store.query()] == [eid]
    finally:
        await engine.dispose()


async def test_unreachable_database_error_hides_password(tmp_path: Path) -> None:
    # Port 9 (discard) is closed on loopback: the refusal is immediate.
    url = "postgresql+asyncpg://streamd:s3cret-pw@127.0.0.1:9/streamd"
    with pytest.raises(DatabaseError) as info:
        await upgrade(url)
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1:9" in message
    assert "***" in message
    assert info.value.__cause__ is not None

    engine = make_engine(url)
    try:
        store = EventStore(engine, tmp_path, PREFIX)
        with pytest.raises(DatabaseError) as info2:
            await store.query()
        assert "s3cret-pw" not in str(info2.value)
    finally:
        await engine.dispose()

    with pytest.raises(DatabaseError, match="unsupported database"):
        await upgrade("mysql://root@127.0.0.1/x")

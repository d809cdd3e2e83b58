"""EventWriter against a PRIVATE PostgreSQL that the tests stop and start (never the shared one).

A database outage must never reach the caller of `submit`; changes wait in order (memory, then
the fsync'd journal), are written when the server is back, and survive a crash in between.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from support.services import PrivatePostgres, ServiceUnavailable

from streamd.events.change import EventChange, new_event_id
from streamd.events.db import make_engine, upgrade
from streamd.events.journal import JOURNAL_NAME, Journal, JournalError
from streamd.events.outage import DatabaseStatus
from streamd.events.store import EventStore
from streamd.events.writer import EventWriter

PREFIX = "streamd-test"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    try:
        pg = PrivatePostgres()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture
async def db_url(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    """A fresh database on the private server; the server is running again afterwards."""
    name = f"w_{uuid.uuid4().hex[:10]}"
    admin = make_url(private_pg.url).set(drivername="postgresql")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=5)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = make_url(private_pg.url).set(database=name).render_as_string(hide_password=False)
    await upgrade(url)
    yield url
    if not (private_pg.data / "postmaster.pid").exists():
        await asyncio.to_thread(private_pg.start)


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[EventStore]:
    engine = make_engine(db_url)
    yield EventStore(engine, tmp_path / "snapshots", PREFIX)
    await engine.dispose()


def change(kind: str, event_id: str, start: float, end: float | None = None) -> EventChange:
    return EventChange(
        kind=kind,  # type: ignore[arg-type]
        event_id=event_id,
        camera="lobby",
        rule_name="motion",
        rule_text="motion",
        start_time=start,
        end_time=end,
        score=0.7,
        top_score=0.7,
    )


def writer_for(store: EventStore, tmp_path: Path, **kwargs: object) -> EventWriter:
    timing: dict[str, object] = {"backoff_base_s": 0.05, "backoff_cap_s": 0.3}
    timing.update(kwargs)
    return EventWriter(store, tmp_path / "journal", **timing)  # type: ignore[arg-type]


async def until(check: object, within: float = WAIT_S) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


async def envelope_ids(store: EventStore) -> list[tuple[str, str]]:
    rows = await store.outbox.pending(10_000)
    docs = [json.loads(r.payload) for r in rows if r.topic == f"{PREFIX}/events"]
    return [(d["type"], d["after"]["id"]) for d in docs]


async def test_outage_buffers_in_order_and_reports_once(
    store: EventStore,
    private_pg: PrivatePostgres,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamd.events.writer")
    statuses: list[DatabaseStatus] = []
    # memory_max=3: most of the backlog lives only in the journal and is read back from there.
    writer = writer_for(store, tmp_path, memory_max=3, on_status=statuses.append)
    assert await writer.open() == 0
    task = asyncio.create_task(writer.run())
    try:
        t0 = time.time()
        before = new_event_id(t0)  # open before the outage, ended during it
        await writer.submit(change("new", before, t0))
        await until(lambda: writer.stats.written == 1)

        await asyncio.to_thread(private_pg.stop)
        expected = [("new", before)]
        ids = [new_event_id(t0 + i) for i in range(1, 9)]
        await writer.submit(change("end", before, t0, t0 + 1))
        expected.append(("end", before))
        for i, eid in enumerate(ids, start=1):
            await writer.submit(change("new", eid, t0 + i))  # never raises
            await writer.submit(change("end", eid, t0 + i, t0 + i + 0.5))
            expected += [("new", eid), ("end", eid)]
        await until(lambda: not writer.stats.database_up)
        assert writer.pending == 17
        assert (tmp_path / "journal" / JOURNAL_NAME).is_file()
        assert statuses[-1].state == "unavailable"
        assert "ConnectionRefused" in (statuses[-1].reason or "")
        assert "streamd_database_up 0" in writer.metrics()

        await asyncio.to_thread(private_pg.start)
        await until(lambda: writer.pending == 0)
        assert writer.stats.database_up
        assert not (tmp_path / "journal" / JOURNAL_NAME).exists()
    finally:
        task.cancel()
        await asyncio.wait([task])
        await writer.shutdown(1.0)

    assert await envelope_ids(store) == expected
    rows = await store.query(limit=100)
    assert {r.id for r in rows} == {before, *ids}
    assert all(r.ended_at is not None for r in rows)  # no event left open across the outage
    assert [s.state for s in statuses] == ["unavailable", "available"]
    assert statuses[-1].written == 17
    text = [r.getMessage() for r in caplog.records]
    assert sum("database unavailable:" in m for m in text) == 1
    recovered = [m for m in text if "database available again" in m]
    assert len(recovered) == 1
    assert "wrote 17 buffered event changes" in recovered[0]
    # Each change is logged once, when it became durable.
    assert sum(f"event new {ids[0]}" in m for m in text) == 1
    assert writer.stats.dropped == 0
    assert "streamd_database_outages_total 1" in writer.metrics()


async def test_crash_during_outage_replays_the_journal(
    store: EventStore, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    writer = writer_for(store, tmp_path)
    await writer.open()
    task = asyncio.create_task(writer.run())
    await asyncio.to_thread(private_pg.stop)
    t0 = time.time()
    ids = [new_event_id(t0 + i) for i in range(5)]
    for i, eid in enumerate(ids):
        await writer.submit(change("new", eid, t0 + i))
    await writer.submit(change("end", ids[0], t0, t0 + 9))
    await until(lambda: not writer.stats.database_up)
    # "kill -9": no shutdown, no acks; only what the journal holds survives.
    task.cancel()
    await asyncio.wait([task])
    writer.close()
    await asyncio.to_thread(private_pg.start)

    again = writer_for(store, tmp_path)
    assert await again.open() == 6
    assert await again.write_backlog()
    assert again.pending == 0
    await again.shutdown(1.0)
    assert await envelope_ids(store) == [("new", e) for e in ids] + [("end", ids[0])]
    assert not (tmp_path / "journal" / JOURNAL_NAME).exists()


async def test_past_the_budget_new_events_drop_but_ends_are_kept(
    store: EventStore, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    writer = writer_for(store, tmp_path, budget_s=0.3)
    await writer.open()
    task = asyncio.create_task(writer.run())
    try:
        t0 = time.time()
        kept = new_event_id(t0)
        await asyncio.to_thread(private_pg.stop)
        await writer.submit(change("new", kept, t0))
        await until(lambda: not writer.stats.database_up)
        await asyncio.sleep(0.4)  # the outage outlives its 0.3 s budget
        late = new_event_id(t0 + 1)
        await writer.submit(change("new", late, t0 + 1))
        await writer.submit(change("end", late, t0 + 1, t0 + 2))
        await writer.submit(change("end", kept, t0, t0 + 3))
        assert writer.stats.dropped == 2
        await asyncio.to_thread(private_pg.start)
        await until(lambda: writer.pending == 0)
    finally:
        task.cancel()
        await asyncio.wait([task])
        await writer.shutdown(1.0)
    assert await envelope_ids(store) == [("new", kept), ("end", kept)]
    assert "streamd_event_changes_dropped_total 2" in writer.metrics()


def test_journal_survives_a_torn_and_a_corrupt_line(tmp_path: Path) -> None:
    from streamd.events.change import PendingChange

    def pending(i: int) -> PendingChange:
        return PendingChange(
            kind="new",
            event_id=f"e{i}",
            camera="c",
            rule_name="r",
            rule_text="t",
            start_time=float(i),
            end_time=None,
            score=float("nan") if i == 3 else 0.5,
            top_score=0.5,
        )

    j = Journal(tmp_path)
    j.append([(i, pending(i)) for i in range(4)])
    j.ack(0)
    j.close()
    lines = j.path.read_bytes().split(b"\n")
    lines[2] = b'{"seq": 2, "chan'  # corrupt in the middle
    j.path.write_bytes(b"\n".join(lines[:-1]) + b'\n{"seq":9,"change":{"ki')  # torn at the end
    again = Journal(tmp_path)
    got = again.recover()
    assert [(e.seq, e.change.event_id) for e in got] == [(1, "e1"), (3, "e3")]
    assert math.isnan(got[1].change.score)  # NaN survives the round trip
    again.append([(10, pending(10))])  # appends after the repaired tail, not glued to it
    again.close()
    last = Journal(tmp_path)
    final = last.recover()
    last.close()
    assert [e.seq for e in final] == [1, 3, 10]


def test_second_daemon_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.lock()
    try:
        with pytest.raises(JournalError, match="in use by another streamd"):
            Journal(tmp_path).lock()
    finally:
        first.close()
    third = Journal(tmp_path)
    third.lock()  # released: a restart gets it
    third.close()

"""Event ids across instances sharing one database (real PostgreSQL and SQLite).

Ids are `"<start epoch>-<6 random chars>"`; a collision needs the same microsecond and the same
6 characters, so the tests force one by handing two instances the same id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from streamd.events.change import EventChange, PendingChange
from streamd.events.db import make_engine, upgrade
from streamd.events.ids import derived_id
from streamd.events.store import EventStore

T0 = 1_764_082_000.0
ID = f"{T0:.6f}-abc123"
PREFIX = "streamd-ids"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ID_RE = re.compile(r"^\d+\.\d{6}-[a-z0-9]{6}$")


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"
        await upgrade(url)
        eng = make_engine(url)
        yield eng
        await eng.dispose()
        return
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}")
    name = f"streamd_ids_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await upgrade(url)
        eng = make_engine(url)
        yield eng
        await eng.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def change(kind: str, camera: str, end: float | None = None, score: float = 0.5) -> EventChange:
    return EventChange(
        kind=kind,  # type: ignore[arg-type]
        event_id=ID,
        camera=camera,
        rule_name="moving",
        rule_text="there is motion",
        start_time=T0,
        end_time=end,
        score=score,
        top_score=score,
    )


async def test_colliding_ids_from_two_instances_keep_both_events(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    a = EventStore(engine, tmp_path / "a", PREFIX, instance="alpha")
    b = EventStore(engine, tmp_path / "b", PREFIX, instance="bravo")
    await a.record(change("new", "cam0"))
    await b.record(change("new", "cam1"))  # same id, another event
    await b.record(change("update", "cam1", score=0.9))
    await a.record(change("new", "cam0"))  # a retry of alpha's new: still a no-op
    await b.record(change("end", "cam1", end=T0 + 5, score=0.9))

    rows = {r.camera: r for r in await a.query()}
    assert set(rows) == {"cam0", "cam1"}
    assert rows["cam0"].id == ID
    assert rows["cam0"].instance == "alpha"
    assert rows["cam0"].end_time is None
    moved = rows["cam1"]
    assert moved.id != ID
    assert ID_RE.match(moved.id)
    assert moved.id.partition("-")[0] == ID.partition("-")[0]  # same start epoch
    assert moved.instance == "bravo"
    assert moved.top_score == 0.9
    assert moved.end_time == T0 + 5

    # Each instance publishes only its own rows, and the payloads say who and which id.
    mine_a = await a.outbox.pending()
    mine_b = await b.outbox.pending()
    assert {r.id for r in mine_a}.isdisjoint({r.id for r in mine_b})
    env_b = [json.loads(r.payload) for r in mine_b if r.topic == f"{PREFIX}/events"]
    assert [e["type"] for e in env_b] == ["new", "update", "end"]
    assert {e["after"]["id"] for e in env_b} == {moved.id}
    assert {e["after"]["instance"] for e in env_b} == {"bravo"}
    env_a = [json.loads(r.payload) for r in mine_a if r.topic == f"{PREFIX}/events"]
    assert [(e["type"], e["after"]["id"], e["after"]["instance"]) for e in env_a] == [
        ("new", ID, "alpha")
    ]


def test_derived_ids_are_stable_and_distinct() -> None:
    base = PendingChange(
        kind="new",
        event_id=ID,
        camera="cam1",
        rule_name="moving",
        rule_text="t",
        start_time=T0,
        end_time=None,
        score=0.5,
        top_score=0.5,
        instance="bravo",
    )
    other = base.model_copy(update={"instance": "charlie"})
    assert derived_id(base, 0) == ID
    assert derived_id(base, 1) == derived_id(base, 1)  # after a restart too: no state
    assert len({derived_id(base, k) for k in range(8)}) == 8
    assert derived_id(base, 1) != derived_id(other, 1)
    assert all(ID_RE.match(derived_id(base, k)) for k in range(8))

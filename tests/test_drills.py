"""Outage drills, run as an operator would: the real `streamd run` with private services.

(a) the MQTT broker stopped 20 s while events fire; (b) kill -9 of the daemon with an outbox
backlog, then a restart; (c) PostgreSQL stopped 30 s while events fire. Each counts by event id:
fired (logged by the daemon once durable) = in SQL = delivered on MQTT, none lost; a repeat is
allowed only as a QoS 1 redelivery of the same (type, id). Run with -s to see the drill table.

Every service taken away is the test's own (support/services.py): the shared 127.0.0.1:1883 and
127.0.0.1:5432 are never touched. The sleeps below ARE the outages; everything else polls.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.daemon import StreamdProcess, free_port
from support.drill import (
    DrillCount,
    PersistentSubscriber,
    drill_config,
    logged_changes,
    motion_clip,
    sqlite_pending_outbox,
    wait_until,
)
from support.services import PrivateMosquitto, PrivatePostgres, ServiceUnavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

TABLE: list[DrillCount] = []


@pytest.fixture(scope="module", autouse=True)
def _print_table() -> Iterator[None]:
    yield
    if TABLE:
        print("\n\nDrill table (counted by event id)\n" + DrillCount.header())
        for row in TABLE:
            print(row.row())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    try:
        b = PrivateMosquitto(tmp_path / "broker")
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def prefix() -> str:
    return f"drill-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return motion_clip(tmp_path / "motion.mp4")


def run_dir(tmp: Path, name: str) -> Path:
    d = tmp / name
    d.mkdir()
    return d


def sql_events(proc: StreamdProcess) -> list[dict[str, Any]]:
    out = proc.cli("events", "-c", str(proc.config_path), "--json", "--limit", "10000")
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def new_ids(*logs: str) -> set[str]:
    return {i for k, i in logged_changes(*logs) if k == "new"}


def settle_and_count(
    name: str,
    procs: list[StreamdProcess],
    last: StreamdProcess,
    sub: PersistentSubscriber,
    during_outage: int,
    note: str = "",
) -> DrillCount:
    """Stop the daemon cleanly, wait until MQTT has every fired event's new and end, count."""
    elapsed, rc = last.terminate()
    logs = [p.log() for p in procs]
    assert rc == 0, logs[-1][-3000:]
    assert elapsed < 5.0
    fired = new_ids(*logs)

    def complete() -> bool:
        got = sub.envelopes()
        return fired <= {i for t, i in got if t == "new"} and fired <= {
            i for t, i in got if t == "end"
        }

    wait_until(complete, 20)
    rows = sql_events(last)
    count = DrillCount(
        name=name,
        fired=fired,
        in_sql={r["id"] for r in rows},
        ended_in_sql={r["id"] for r in rows if r["end_time"] is not None},
        delivered=sub.envelopes(),
        during_outage=during_outage,
        note=note,
    )
    TABLE.append(count)
    for text in logs:
        assert "pipeline failed" not in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
    return count


def assert_nothing_lost(count: DrillCount) -> None:
    assert count.fired, "no event fired"
    assert count.during_outage > 0, "no event fired during the outage"
    assert count.lost == set(), count.lost
    assert count.in_sql == count.fired  # nothing in SQL that was not announced either
    assert count.delivered_new == count.fired
    assert count.ended_in_sql == count.fired  # no event left open
    assert count.delivered_end == count.fired
    # Order per event: its `new` arrives before its `end` (first sightings).
    first = {key: n for n, key in reversed(list(enumerate(count.delivered)))}
    for eid in count.fired:
        assert first[("new", eid)] < first[("end", eid)], eid


def wait_delivered(sub: PersistentSubscriber, n: int, timeout: float = 30) -> None:
    assert wait_until(lambda: len({i for t, i in sub.envelopes() if t == "new"}) >= n, timeout)


def test_drill_broker_stopped_20s(
    tmp_path: Path, broker: PrivateMosquitto, prefix: str, clip: Path
) -> None:
    sub = PersistentSubscriber(broker.port, prefix).start()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"
    cfg = drill_config(tmp_path, db_url, broker.port, prefix, clip)
    proc = StreamdProcess(cfg, run_dir(tmp_path, "run1")).start()
    try:
        wait_delivered(sub, 2)
        broker.stop()
        before = new_ids(proc.log())
        time.sleep(20.0)  # the outage
        during = len(new_ids(proc.log()) - before)
        broker.start()
        assert wait_until(lambda: proc.log().count("MQTT connected") >= 2, 30), proc.log()[-3000:]
        after = len(new_ids(proc.log()))
        assert wait_until(lambda: len(new_ids(proc.log())) >= after + 2, 30)
    except BaseException:
        proc.kill()
        raise
    count = settle_and_count("MQTT broker down 20 s", [proc], proc, sub, during)
    sub.stop()
    assert_nothing_lost(count)


def test_drill_kill9_with_outbox_backlog(
    tmp_path: Path, broker: PrivateMosquitto, prefix: str, clip: Path
) -> None:
    sub = PersistentSubscriber(broker.port, prefix).start()
    db = tmp_path / "e.db"
    cfg = drill_config(tmp_path, f"sqlite+aiosqlite:///{db}", broker.port, prefix, clip)
    first = StreamdProcess(cfg, run_dir(tmp_path, "run1")).start()
    try:
        wait_delivered(sub, 2)
        broker.stop()
        before = new_ids(first.log())
        # A backlog: events keep firing while nothing can leave the outbox.
        assert wait_until(lambda: len(new_ids(first.log()) - before) >= 10, 40), first.log()[-2000:]
        backlog = sqlite_pending_outbox(db)
        assert backlog >= 20, backlog  # each new: envelope + state (ends add theirs)
        during = len(new_ids(first.log()) - before)
    finally:
        first.kill()  # SIGKILL: no shutdown, no drain, events left open
    assert first.proc is not None
    assert first.proc.returncode == -9
    broker.start()
    second = StreamdProcess(cfg, run_dir(tmp_path, "run2")).start()
    try:
        assert wait_until(lambda: "ended" in second.log() or "streamd running" in second.log(), 30)
        assert wait_until(lambda: sqlite_pending_outbox(db) == 0, 30), second.log()[-3000:]
    except BaseException:
        second.kill()
        raise
    count = settle_and_count(
        "kill -9, outbox backlog",
        [first, second],
        second,
        sub,
        during,
        note=f"{backlog} MQTT messages pending at the kill",
    )
    sub.stop()
    assert_nothing_lost(count)


@pytest.fixture
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


def test_drill_postgres_stopped_30s(
    tmp_path: Path,
    broker: PrivateMosquitto,
    private_pg: PrivatePostgres,
    prefix: str,
    clip: Path,
) -> None:
    sub = PersistentSubscriber(broker.port, prefix).start()
    api_port = free_port()
    cfg = drill_config(tmp_path, private_pg.url, broker.port, prefix, clip, api_port=api_port)
    api = f"http://127.0.0.1:{api_port}"
    proc = StreamdProcess(cfg, run_dir(tmp_path, "run1")).start()
    answers: list[int] = []
    try:
        wait_delivered(sub, 2)
        assert httpx.get(f"{api}/api/events", timeout=5).status_code == 200
        private_pg.stop()
        t_down = time.monotonic()
        before = new_ids(proc.log())
        # While it is down: the API says why with 503 (never 500), the metrics and MQTT say
        # the database is unavailable, and the cameras keep firing.
        assert wait_until(lambda: "database unavailable:" in proc.log(), 20), proc.log()[-3000:]
        r = httpx.get(f"{api}/api/events", timeout=15)
        answers.append(r.status_code)
        assert r.status_code == 503, r.text
        assert "database unavailable" in r.json()["detail"]
        assert r.headers["retry-after"]
        answers.append(httpx.get(f"{api}/api/events/nope", timeout=15).status_code)
        rule = {"name": "during-outage", "text": "motion", "cameras": ["cam_a"]}
        answers.append(httpx.post(f"{api}/api/rules", json=rule, timeout=15).status_code)
        metrics = httpx.get(f"{api}/metrics", timeout=5).text
        assert "streamd_database_up 0" in metrics

        def down_reported() -> list[str]:
            states = [json.loads(m.payload)["state"] for m in sub.on("database")]
            return [s for s in states if s == "unavailable"]

        status = wait_until(down_reported, 10)
        assert status, [m.payload for m in sub.on("database")]
        time.sleep(max(0.0, 30.0 - (time.monotonic() - t_down)))  # the rest of the outage
        during = len(new_ids(proc.log()) - before)
        private_pg.start()
        assert wait_until(lambda: "database available again" in proc.log(), 30), proc.log()[-3000:]
        assert httpx.get(f"{api}/api/events", timeout=5).status_code == 200
        assert "streamd_database_up 1" in httpx.get(f"{api}/metrics", timeout=5).text
        after = len(new_ids(proc.log()))
        assert wait_until(lambda: len(new_ids(proc.log())) >= after + 2, 30)
    except BaseException:
        proc.kill()
        raise
    log = proc.log()
    count = settle_and_count("PostgreSQL down 30 s", [proc], proc, sub, during)
    sub.stop()
    assert 500 not in answers
    assert set(answers) == {503}
    # Reported once: one line when it starts, one when it is over (with the count written).
    assert log.count("database unavailable:") == 1, log[-3000:]
    assert log.count("database available again") == 1
    assert log.count("MQTT: cannot read the outbox") <= 1
    states = [json.loads(m.payload)["state"] for m in sub.on("database")]
    assert states[0] == "available"
    assert "unavailable" in states
    assert states[-1] == "available"
    assert_nothing_lost(count)

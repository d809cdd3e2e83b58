"""Operations: retention by age and size, /metrics from prometheus_client agreeing with SQL,
`<prefix>/stats` on a schedule and a retained camera status (real SQLite, real Mosquitto)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_mqtt import HOST, Received, Subscriber, prefix, shared_broker, stop, topic_is

from streamd.api import ApiState, create_app
from streamd.config import CameraConfig, Config, MqttConfig, RetentionConfig
from streamd.events.change import EventChange, Snapshot, new_event_id
from streamd.events.db import make_engine, upgrade
from streamd.events.mqtt import MqttPublisher
from streamd.events.retention import Retention
from streamd.events.store import EventStore
from streamd.metrics import Metrics
from streamd.ops import Operations
from streamd.pipeline import CameraPipeline

__all__ = ["prefix", "shared_broker"]  # fixtures, imported for pytest


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"
    await upgrade(url)
    engine = make_engine(url)
    yield EventStore(engine, tmp_path / "snapshots", "streamd-ops-test")
    await engine.dispose()


def ev(kind: str, eid: str, camera: str, rule: str, start: float, *, image: bool = False,
       end: float | None = None) -> EventChange:  # fmt: skip
    snap = None
    if image:
        # Noise: JPEG cannot squeeze it, so every snapshot has a real, similar size.
        rng = np.random.default_rng(abs(hash(eid)) % 2**32)
        snap = Snapshot(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    return EventChange(kind, eid, camera, rule, "a rule", start, end, 0.9, 0.9, snapshot=snap)  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_agree_with_sql(store: EventStore) -> None:
    metrics = Metrics(store, {})
    t0 = time.time() - 100
    fired = [("lobby", "bag"), ("lobby", "bag"), ("lobby", "van"), ("door", "bag")]
    ids = []
    for i, (camera, rule) in enumerate(fired):
        change = ev("new", new_event_id(t0 + i), camera, rule, t0 + i)
        await store.record(change)
        metrics.count(change)
        ids.append(change.event_id)
    await store.record(ev("end", ids[0], "lobby", "bag", t0, end=t0 + 5))

    text = (await metrics.render()).decode()
    assert "# HELP streamd_events_total Events opened by this process" in text
    assert "# TYPE streamd_events_total counter" in text
    assert "# TYPE streamd_events_stored gauge" in text
    got = samples(text)
    # The log as `streamd events` reads it.
    totals: Counter[tuple[str, str]] = Counter()
    opened: Counter[tuple[str, str]] = Counter()
    for rec in await store.query(limit=1000):
        totals[(rec.camera, rec.rule)] += 1
        opened[(rec.camera, rec.rule)] += rec.active
    rows = [(c, r, totals[(c, r)], opened[(c, r)]) for c, r in totals]
    assert len(rows) == 3
    for camera, rule, total, still_open in rows:
        labels = (("camera", camera), ("rule", rule))
        assert got[("streamd_events_total", labels)] == total
        assert got[("streamd_events_stored", labels)] == total
        assert got[("streamd_events_open", labels)] == still_open
    assert got[("streamd_outbox_pending", ())] == await store.outbox.pending_count() == 10
    assert got[("streamd_database_up", ())] == 1

    # The same through the HTTP route, with Prometheus's content type.
    cfg = Config()
    with TestClient(create_app(ApiState(cfg, store, {}, {}, metrics=metrics))) as client:
        r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    assert samples(r.text)[("streamd_events_total", (("camera", "door"), ("rule", "bag")))] == 1


async def test_retention_by_age_and_size_per_camera(store: EventStore) -> None:
    now = time.time()
    old_start = now - 40 * 86400
    # An ended 40-day-old event goes with its snapshot; a 40-day-old open one stays.
    gone = new_event_id(old_start)
    await store.record(ev("new", gone, "lobby", "bag", old_start, image=True))
    await store.record(ev("end", gone, "lobby", "bag", old_start, end=old_start + 10))
    still_open = new_event_id(old_start + 1)
    await store.record(ev("new", still_open, "door", "bag", old_start + 1))
    # Six recent events with snapshots on lobby, one on door; file ages 6..1 days.
    recent = []
    for i in range(6):
        eid = new_event_id(now - 1000 + i)
        await store.record(ev("new", eid, "lobby", "bag", now - 1000 + i, image=True))
        path = store.snapshot_dir / "lobby" / f"{eid}.jpg"
        os.utime(path, (now - (6 - i) * 86400, now - (6 - i) * 86400))
        recent.append(eid)
    door = new_event_id(now - 500)
    await store.record(ev("new", door, "door", "van", now - 500, image=True))
    one = (store.snapshot_dir / "lobby" / f"{recent[0]}.jpg").stat().st_size
    tmp = store.snapshot_dir / "lobby" / f".{recent[0]}.x.tmp"  # a snapshot being written
    tmp.write_bytes(b"partial")

    # Age: snapshots older than 4.5 days (the first two of lobby); size: lobby keeps at most
    # three files' worth, so the third-oldest goes too. door is under both limits.
    cfg = RetentionConfig(events_days=30, snapshots_days=4.5, snapshots_max_mb=3.5 * one / 1e6)
    retention = Retention(store, cfg)
    stats = await retention.run(now)

    assert await store.get(gone) is None
    assert (await store.get(still_open)) is not None
    kept = sorted(p.name for p in (store.snapshot_dir / "lobby").glob("*.jpg"))
    assert kept == sorted(f"{e}.jpg" for e in recent[3:])
    for eid in recent[:3]:
        rec = await store.get(eid)
        assert rec is not None  # the event stays, its picture is gone
        assert not rec.has_snapshot
    for eid in recent[3:]:
        rec = await store.get(eid)
        assert rec is not None
        assert rec.has_snapshot
    door_rec = await store.get(door)
    assert door_rec is not None
    assert door_rec.has_snapshot
    assert tmp.exists()
    assert stats.events_deleted == 1
    assert stats.snapshots_deleted == 3
    assert stats.snapshot_bytes["door"] > 0
    assert stats.snapshot_bytes["lobby"] <= cfg.snapshots_max_mb * 1e6

    # A second pass finds nothing more to do.
    again = await retention.run(now)
    assert again.snapshots_deleted == 3
    assert again.runs == 2


async def test_stats_every_interval_and_retained_camera_status(
    shared_broker: int, store: EventStore, prefix: str
) -> None:
    mqtt = MqttConfig(
        host=HOST,
        port=shared_broker,
        topic_prefix=prefix,
        discovery=False,
        stats_interval_s=0.3,  # tests only; 60 s by default
    )
    cfg = Config(mqtt=mqtt, cameras={"lobby": CameraConfig(demo=True)})
    store = EventStore(store.engine, store.snapshot_dir, prefix)

    async def sink(change: EventChange) -> None:
        await store.record(change)

    # A real pipeline on the generated demo scene (no model: motion and scene analysis).
    pipelines = {"lobby": CameraPipeline("lobby", cfg.cameras["lobby"], [], None, sink)}
    pub = MqttPublisher(mqtt, store, idle_wait_s=0.5, discovery_check_s=0.1)
    ops = Operations(cfg, store, pipelines, pub)
    scheduler = AsyncIOScheduler()
    async with Subscriber(shared_broker, [f"{prefix}/#"]) as sub:
        task = asyncio.create_task(pub.run())
        camera = asyncio.create_task(pipelines["lobby"].run())
        ops.schedule(scheduler)
        scheduler.start()
        try:
            first = await sub.wait_for(topic_is(f"{prefix}/stats"))
            await sub.wait_for(topic_is(f"{prefix}/stats"), start=sub.messages.index(first) + 1)
            doc = json.loads(first.payload)
            assert set(doc["cameras"]) == {"lobby"}
            assert doc["events"] == 0
            assert doc["outbox_pending"] == 0

            def live(m: Received) -> bool:
                if m.topic != f"{prefix}/lobby/status":
                    return False
                status = json.loads(m.payload)
                return bool(status["online"] and status["analysed_fps"] > 0)

            await sub.wait_for(live, within=30)
        finally:
            scheduler.shutdown(wait=False)
            camera.cancel()
            await asyncio.gather(camera, return_exceptions=True)
            ops.publish_stopped()  # as the daemon does before stopping the publisher
            await stop(task)
    assert ops.stats_published >= 2
    async with Subscriber(shared_broker, [f"{prefix}/lobby/status"]) as late:
        retained = await late.wait_for(topic_is(f"{prefix}/lobby/status"), within=5)
        assert retained.retain
        assert json.loads(retained.payload)["online"] is False  # streamd stopped

"""Several real daemons on one PostgreSQL and one Mosquitto: disjoint cameras, fair shares, one
merged history, failover after kill -9, and a newcomer taking its share.

Each daemon is `python -m streamd run` in its own directory (its own data_dir and API port) with
the same cameras and rules; cameras are generated demo scenes (motion every cycle), the rule is
"there is motion" so that every camera has events within seconds. Leases use short timings
(TTL 6 s, renewal every 2 s) so the failover is measured in seconds; the time from the kill to
the victim's cameras being analysed elsewhere is printed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from support.daemon import MqttWatcher, StreamdProcess, free_port, wait_for

# Four daemons each load torch and MiniLM at start: minutes on two shared cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

CAMERAS = [f"cam{i}" for i in range(6)]
TTL_S, RENEW_S = 6.0, 2.0
START_TIMEOUT_S = 420.0  # three daemons loading torch and MiniLM at once on two busy cores


def _config(tmp: Path, name: str, db_url: str, prefix: str) -> dict[str, Any]:
    return {
        "instance": {"name": name},
        "cluster": {"lease_ttl_s": TTL_S, "renew_s": RENEW_S},
        "data_dir": str(tmp / name / "data"),
        "database": {"url": db_url},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic_prefix": prefix,
                 "discovery_prefix": f"{prefix}-ha", "stats_interval_s": 5},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "window": {"enabled": False},
        "model": {"detector": {"path": str(tmp / "none.onnx"), "url": None}},
        "cameras": {c: {"demo": True, "fps": 2} for c in CAMERAS},
        "rules": [{"name": "moving", "text": "there is motion", "cooldown_s": 0}],
    }  # fmt: skip


class Instance:
    def __init__(self, tmp: Path, name: str, db_url: str, prefix: str) -> None:
        self.name = name
        (tmp / name).mkdir()
        cfg = _config(tmp, name, db_url, prefix)
        self.api = f"http://{cfg['api']['listen']}"
        self.proc = StreamdProcess(cfg, tmp / name).start()

    def cameras(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{self.api}/api/cameras", timeout=3)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None  # type: ignore[no-any-return]

    def analysing(self) -> set[str]:
        """Cameras this instance runs and has analysed frames of."""
        cams = self.cameras() or {}
        return {c for c, v in cams.items() if v["local"] and (v["analysed_frames"] or 0) > 0}

    def local(self) -> set[str]:
        return {c for c, v in (self.cameras() or {}).items() if v["local"]}


def _holders(db_url: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        conn = await asyncpg.connect(db_url.replace("+asyncpg", ""), timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT camera, holder FROM camera_leases WHERE holder IS NOT NULL "
                "AND expires_at > now()"
            )
        except asyncpg.UndefinedTableError:
            return {}  # no daemon has migrated the database yet
        finally:
            await conn.close()
        return {r["camera"]: r["holder"] for r in rows}

    return asyncio.run(read())


def _shares(holders: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in holders.values():
        out[h] = out.get(h, 0) + 1
    return out


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, mqtt_prefix: str) -> Iterator[dict[str, Any]]:
    ok, why = MqttWatcher.available()
    if not ok:
        pytest.skip(why)
    watcher = MqttWatcher(mqtt_prefix).start()
    made: list[Instance] = []

    def spawn(name: str) -> Instance:
        inst = Instance(tmp_path, name, pg_url, mqtt_prefix)
        made.append(inst)
        return inst

    try:
        yield {"spawn": spawn, "db": pg_url, "watcher": watcher}
    finally:
        for inst in made:
            if inst.proc.proc is not None and inst.proc.proc.poll() is None:
                inst.proc.terminate(timeout=15)
        watcher.stop()


def test_three_instances_share_cameras_fail_over_and_rebalance(cluster: dict[str, Any]) -> None:
    spawn, db, watcher = cluster["spawn"], cluster["db"], cluster["watcher"]
    a, b, c = spawn("alpha"), spawn("bravo"), spawn("charlie")
    trio = [a, b, c]

    def balanced() -> dict[str, int] | None:
        shares = _shares(_holders(db))
        ok = shares == {"alpha": 2, "bravo": 2, "charlie": 2}
        return shares if ok and all(len(i.analysing()) == 2 for i in trio) else None

    t_start = time.monotonic()
    assert wait_for(balanced, START_TIMEOUT_S, interval=1.0), (
        f"leases {_holders(db)}; logs:\n" + "\n".join(i.proc.log()[-1500:] for i in trio)
    )
    balanced_at = time.time()
    print(
        f"\nstart: 3 instances hold 2 cameras each {time.monotonic() - t_start:.0f} s after launch"
    )
    # Disjoint: what each instance runs is what the lease table gives it, nothing twice.
    local = {i.name: i.local() for i in trio}
    holders = _holders(db)
    for name, cams in local.items():
        assert cams == {cam for cam, h in holders.items() if h == name}
    assert sorted(cam for cams in local.values() for cam in cams) == CAMERAS
    # Any instance says which instance holds each camera.
    listed = a.cameras()
    assert listed is not None
    assert {cam: v["instance"] for cam, v in listed.items()} == holders

    # Every instance records events; any instance reads them all (one shared history).
    def events_from_all() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = httpx.get(
            f"{b.api}/api/events", params={"limit": 1000}, timeout=5
        ).json()
        # Events that started once the shares settled (cameras may move while they do).
        rows = [r for r in rows if r["start_time"] > balanced_at]
        return rows if {r["instance"] for r in rows} >= {"alpha", "bravo", "charlie"} else None

    rows = wait_for(events_from_all, 60, interval=1.0)
    assert rows, "no events from every instance"
    for r in rows:
        assert holders[r["camera"]] == r["instance"], r  # recorded by the camera's holder
    out = c.proc.cli("events", "-c", str(c.proc.config_path), "--json", "--limit", "1000")
    assert out.returncode == 0, out.stderr
    cli_ids = {r["id"] for r in json.loads(out.stdout)}
    assert {r["id"] for r in rows} <= cli_ids

    # MQTT payloads carry the instance; per-instance availability is retained.
    def settled_new() -> list[dict[str, Any]] | None:
        new = [m.json() for m in watcher.events("new")]
        new = [e for e in new if e["after"]["start_time"] > balanced_at]
        return (
            new if {e["after"]["instance"] for e in new} >= {"alpha", "bravo", "charlie"} else None
        )

    new = wait_for(settled_new, 10)
    assert new, "MQTT envelopes do not name every instance"
    for e in new:
        assert holders[e["after"]["camera"]] == e["after"]["instance"]
    # Each rule's state starts OFF (sent by the instance that took the camera), then follows it.
    for cam in CAMERAS:
        states = [m.payload for m in watcher.on(f"{cam}/moving/state")]
        assert states[:1] == ["OFF"], (cam, states)
        assert "ON" in states, (cam, states)
    for i in trio:
        assert wait_for(lambda i=i: watcher.on(f"instance/{i.name}/available"), 10)
        assert watcher.on(f"instance/{i.name}/available")[-1].payload == "online"

    # kill -9 one instance: its cameras are analysed by the others within 30 s.
    victim_cams = local["bravo"]
    before = {i.name: {cam: (i.cameras() or {})[cam]["analysed_frames"] for cam in i.local()}
              for i in (a, c)}  # fmt: skip
    t_kill = time.monotonic()
    b.proc.kill()

    def resumed() -> set[str] | None:
        taken = a.analysing() | c.analysing()
        return taken if victim_cams <= taken else None

    assert wait_for(resumed, 30, interval=0.25), (
        f"cameras {victim_cams} not resumed: leases {_holders(db)}; logs:\n"
        + "\n".join(i.proc.log()[-2000:] for i in (a, c))
    )
    failover_s = time.monotonic() - t_kill
    print(f"\nfailover: kill -9 → {sorted(victim_cams)} analysed again after {failover_s:.1f} s "
          f"(lease TTL {TTL_S:g} s, renewal {RENEW_S:g} s)")  # fmt: skip
    assert _shares(_holders(db)) == {"alpha": 3, "charlie": 3}
    # The survivors' own cameras kept running throughout (their counters only grew).
    for i in (a, c):
        now = i.cameras() or {}
        for cam, n in before[i.name].items():
            assert now[cam]["local"]
            assert now[cam]["analysed_frames"] >= n
    # The dead instance's per-instance availability went offline (its Last Will).
    assert wait_for(
        lambda: [m for m in watcher.on("instance/bravo/available") if m.payload == "offline"], 30
    )
    assert watcher.on("available")[-1].payload == "online"  # the service is still up

    # A fourth instance joins and takes its share: 6 over 3 live instances is 2 each.
    d = spawn("delta")
    t_join = time.monotonic()

    def rebalanced() -> dict[str, int] | None:
        shares = _shares(_holders(db))
        ok = shares == {"alpha": 2, "charlie": 2, "delta": 2} and len(d.analysing()) == 2
        return shares if ok else None

    assert wait_for(rebalanced, START_TIMEOUT_S, interval=1.0), (
        f"leases {_holders(db)}; delta log:\n{d.proc.log()[-3000:]}"
    )
    print(f"join: delta analysing its 2 cameras {time.monotonic() - t_join:.1f} s after start")
    local = {i.name: i.local() for i in (a, c, d)}
    assert sorted(cam for cams in local.values() for cam in cams) == CAMERAS

    # One merged history, no duplicate ids, every event ended or still owned by a live holder.
    for i in (a, c, d):
        _, rc = i.proc.terminate(timeout=20)
        assert rc == 0, i.proc.log()[-2000:]
    out = a.proc.cli("events", "-c", str(a.proc.config_path), "--json", "--limit", "10000")
    assert out.returncode == 0, out.stderr
    history = json.loads(out.stdout)
    ids = [r["id"] for r in history]
    assert len(ids) == len(set(ids))
    assert {r["instance"] for r in history} == {"alpha", "bravo", "charlie", "delta"}
    assert all(r["end_time"] is not None for r in history), "open events after every stop"
    assert _holders(db) == {}  # everyone left cleanly

"""Camera leases against a real PostgreSQL: races, expiry, fair shares, a lost database.

Every test gets a database of its own (the `pg_url` fixture); the lost-database case runs a
private PostgreSQL it can stop. Time passes for real (short TTLs) and is waited for by polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from support.services import PrivatePostgres, ServiceUnavailable

from streamd.cluster.keeper import LeaseKeeper
from streamd.cluster.leases import LeaseStore
from streamd.cluster.share import excess, room, target
from streamd.config import ClusterConfig, Config, InstanceConfig
from streamd.config.cluster import default_instance_name
from streamd.events.db import DatabaseError, make_engine, upgrade

CAMERAS = [f"cam{i}" for i in range(6)]


async def until(cond: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while not await cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
async def engines(pg_url: str) -> AsyncIterator[list[AsyncEngine]]:
    await upgrade(pg_url)
    made = [make_engine(pg_url) for _ in range(4)]  # one per instance, as in production
    yield made
    for e in made:
        await e.dispose()


class Recorder:
    """The keeper's start/stop callbacks: what a daemon would run, as a set."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.starts = 0

    async def start(self, cam: str) -> None:
        assert cam not in self.running
        self.running.add(cam)
        self.starts += 1

    async def stop(self, cam: str) -> None:
        self.running.discard(cam)


def keeper(store: LeaseStore, rec: Recorder, ttl: float = 2.0) -> LeaseKeeper:
    return LeaseKeeper(store, CAMERAS, rec.start, rec.stop, renew_s=ttl / 3, ttl_s=ttl)


# -- config -------------------------------------------------------------------------------------


def test_instance_name_default_is_the_host_name_made_safe() -> None:
    name = default_instance_name()
    assert Config().instance.name == name
    assert name
    assert name == name.lower()
    assert "." not in name


@pytest.mark.parametrize("bad", ["Web1", "a/b", "a b", "", "-x", "x" * 64])
def test_instance_name_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        InstanceConfig(name=bad)


def test_renewal_must_fit_twice_in_the_ttl() -> None:
    with pytest.raises(ValueError, match=r"at most half of cluster\.lease_ttl_s"):
        ClusterConfig(lease_ttl_s=5, renew_s=3)
    with pytest.raises(ValueError, match=r"(?i)extra"):
        ClusterConfig.model_validate({"lease_ttl_s": 15, "renew": 5})


# -- fair shares (pure) ---------------------------------------------------------------------


def test_shares() -> None:
    assert [target(6, 3), target(6, 4), target(7, 3), target(3, 0)] == [2, 2, 3, 3]
    # Alone: take everything.
    assert room("a", {"a": 0}, 6) == 6
    # A second instance appears: the first gives back down to ceil(6/2).
    assert excess("a", {"a": 6, "b": 0}, 6) == 3
    assert room("b", {"a": 6, "b": 0}, 6) == 3
    # A fourth joins three holding 2 each: floor(6/4)=1, it lacks one; the first of the
    # biggest holders (ties by name) gives one: 2, 2, 1, 1.
    counts = {"a": 2, "b": 2, "c": 2, "d": 0}
    given = {n: excess(n, counts, 6) for n in counts}
    assert given == {"a": 1, "b": 0, "c": 0, "d": 0}
    assert room("d", counts, 6) == 2
    assert room("a", {"a": 1, "b": 2, "c": 2, "d": 0}, 6) == 0  # the free one is d's
    # Cameras already free count against what has to be given.
    assert all(excess(n, {"a": 2, "b": 2, "c": 1, "d": 0}, 6) == 0 for n in "abcd")
    # Balanced: nothing moves.
    assert all(excess(n, {"a": 2, "b": 2, "c": 1, "d": 1}, 6) == 0 for n in "abcd")
    assert all(excess(n, {"a": 2, "b": 2, "c": 2}, 6) == 0 for n in "abc")


# -- leases on PostgreSQL -------------------------------------------------------------------


async def test_racing_instances_never_both_hold_a_camera(engines: list[AsyncEngine]) -> None:
    stores = [LeaseStore(e, f"i{k}", ttl_s=30) for k, e in enumerate(engines)]
    await stores[0].register(CAMERAS)
    for round_ in range(15):
        got = await asyncio.gather(*(s.acquire(CAMERAS, 6) for s in stores))
        taken = [c for g in got for c in g]
        assert len(taken) == len(set(taken)) == 6, (round_, got)
        holders = await stores[0].holders()
        for store, cams in zip(stores, got, strict=True):
            assert all(holders[c].instance == store.name for c in cams)
        await asyncio.gather(*(s.release(CAMERAS) for s in stores))
        assert await stores[0].holders() == {}


async def test_expired_lease_is_taken_over_and_lost_by_its_holder(
    engines: list[AsyncEngine],
) -> None:
    a = LeaseStore(engines[0], "a", ttl_s=1.0)
    b = LeaseStore(engines[1], "b", ttl_s=1.0)
    await a.register(CAMERAS[:2])
    assert await a.acquire(CAMERAS[:2], 5) == CAMERAS[:2]
    assert await b.acquire(CAMERAS[:2], 5) == []
    assert await a.renew() == set(CAMERAS[:2])

    async def b_takes_over() -> bool:
        return await b.acquire(CAMERAS[:2], 5) == CAMERAS[:2]

    assert await until(b_takes_over, within=5.0)
    assert await a.renew() == set()  # a learns at its next renewal that they are gone
    assert {c: h.instance for c, h in (await a.holders()).items()} == dict.fromkeys(
        CAMERAS[:2], "b"
    )
    await b.release([CAMERAS[0]])
    assert await a.acquire(CAMERAS[:2], 5) == [CAMERAS[0]]


async def test_keepers_share_fairly_and_a_newcomer_gets_its_share(
    engines: list[AsyncEngine],
) -> None:
    recs = [Recorder() for _ in range(4)]
    keepers = [keeper(LeaseStore(e, f"k{i}", ttl_s=2.0), r) for i, (e, r) in
               enumerate(zip(engines, recs, strict=True))]  # fmt: skip
    first, rest = keepers[0], keepers[1:3]
    await first.store.register(CAMERAS)
    await first.tick()
    assert recs[0].running == set(CAMERAS)  # alone: everything
    for k in rest:
        await k.tick()  # heartbeats in; nothing free yet
    for _ in range(3):
        for k in keepers[:3]:
            await k.tick()
    sets = [r.running for r in recs[:3]]
    assert [len(s) for s in sets] == [2, 2, 2], sets
    assert set().union(*sets) == set(CAMERAS)
    # The database agrees with what runs.
    holders = {c: h.instance for c, h in (await first.store.holders()).items()}
    for k, r in zip(keepers, recs, strict=True):
        assert {c for c, h in holders.items() if h == k.store.name} == r.running

    starts_before = sum(r.starts for r in recs[:3])
    for _ in range(3):
        for k in keepers:
            await k.tick()
    sizes = sorted(len(r.running) for r in recs)
    assert sizes == [1, 1, 2, 2], [r.running for r in recs]
    assert len(recs[3].running) >= 1
    all_running = [c for r in recs for c in r.running]
    assert sorted(all_running) == sorted(CAMERAS)  # disjoint and complete
    # The join moved one camera (6 over 4 is 2, 2, 1, 1), not everything.
    assert sum(r.starts for r in recs[:3]) == starts_before
    assert recs[3].starts == 1


async def test_keeper_leaves_cleanly(engines: list[AsyncEngine]) -> None:
    rec = Recorder()
    k = keeper(LeaseStore(engines[0], "leaver", ttl_s=3.0), rec)
    task = asyncio.create_task(k.run())

    async def running_all() -> bool:
        return rec.running == set(CAMERAS)

    assert await until(running_all, within=10.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rec.running == set()
    other = LeaseStore(engines[1], "other", ttl_s=3.0)
    assert await other.holders() == {}
    assert await other.acquire(CAMERAS, 6) == CAMERAS  # at once: no waiting for expiry


async def test_lost_database_keeps_cameras_until_the_lease_would_expire(tmp_path: Path) -> None:
    try:
        pg = PrivatePostgres()
        pg.init()
        pg.start()
    except (ServiceUnavailable, RuntimeError) as exc:
        pytest.skip(f"no private PostgreSQL: {exc}")
    engine = make_engine(pg.url)
    try:
        await upgrade(pg.url)
        rec = Recorder()
        ttl = 3.0
        k = keeper(LeaseStore(engine, "cut-off", ttl_s=ttl), rec, ttl=ttl)
        await k.tick()
        assert rec.running == set(CAMERAS)
        last_renewal = time.monotonic()
        pg.stop("immediate")
        with pytest.raises(DatabaseError):
            await k.tick()
        await k._tick_bounded()  # logged and counted, never raised
        assert k.stats.failed_ticks == 1
        await k._stop_overdue()
        assert rec.running == set(CAMERAS), "stopped before the lease could have expired"

        async def stopped() -> bool:
            await k._stop_overdue()
            return not rec.running

        assert await until(stopped, within=ttl + 2)
        stopped_after = time.monotonic() - last_renewal
        print(f"cameras stopped {stopped_after:.2f} s after the last renewal (TTL {ttl} s)")
        assert stopped_after >= ttl - 0.5
        assert k.stats.expired == len(CAMERAS)
        # The database is back: the leases nobody took are renewed and the cameras run again.
        pg.start()
        await k.tick()
        assert rec.running == set(CAMERAS)
    finally:
        await engine.dispose()
        pg.cleanup()

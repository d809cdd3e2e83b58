"""The lease loop: heartbeat, renew, give back the excess, take a fair share; start and stop
cameras as their leases come and go.

A camera runs only while this instance's own clock says its lease is valid: the local deadline
is taken *before* each renewal is sent (the database's expiry is later), so when the database is
unreachable the camera stops before any other instance could take it over. Cameras are stopped
before their leases are released, never after, so no camera is analysed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from streamd.cluster.leases import LeaseStore
from streamd.cluster.share import excess, room
from streamd.events.db import DatabaseError

log = logging.getLogger(__name__)

CameraAction = Callable[[str], Awaitable[None]]
T = TypeVar("T")

_LEAVE_TIMEOUT_S = 2.0


@dataclass
class KeeperStats:
    ticks: int = 0
    failed_ticks: int = 0
    taken: int = 0
    released: int = 0
    lost: int = 0
    expired: int = 0
    last_error: str | None = None


@dataclass
class LeaseKeeper:
    """Keeps this instance's share of `cameras` (`start`/`stop` run and stop a camera)."""

    store: LeaseStore
    cameras: Sequence[str]
    start: CameraAction
    stop: CameraAction
    renew_s: float
    ttl_s: float
    held: dict[str, float] = field(default_factory=dict)  # camera → local deadline (monotonic)
    stats: KeeperStats = field(default_factory=KeeperStats)
    _first: bool = True

    async def run(self) -> None:
        """Until cancelled; then stops every camera and leaves (releases all, no heartbeat)."""
        try:
            await self._db(self.store.register(self.cameras))
        except (DatabaseError, TimeoutError) as exc:
            log.warning("camera leases not registered yet: %s", exc)
        try:
            while True:
                await self._tick_bounded()
                await self._stop_overdue()
                await asyncio.sleep(self._next_wait())
        finally:
            await self._leave()

    async def _db(self, call: Awaitable[T]) -> T:
        # A database that hangs is as good as gone: each call gives up within a renewal period,
        # so the loop still stops cameras whose leases ran out. Only database calls are bounded:
        # starting and stopping a camera is never cut short half way.
        async with asyncio.timeout(self.renew_s):
            return await call

    async def _tick_bounded(self) -> None:
        try:
            await self.tick()
        except (DatabaseError, TimeoutError) as exc:
            self.stats.failed_ticks += 1
            self.stats.last_error = str(exc) or "database did not answer in time"
            log.warning(
                "camera leases not renewed (%s); %d camera(s) keep running until their leases "
                "run out",
                self.stats.last_error,
                len(self.held),
            )

    async def tick(self) -> None:
        """One round: heartbeat, renew, then give back or take cameras."""
        store = self.store
        if self._first:
            await self._db(store.register(self.cameras))  # in case it failed at first
            self._first = False
        deadline = time.monotonic() + self.ttl_s
        await self._db(store.heartbeat())
        renewed = await self._db(store.renew())
        for cam in sorted(set(self.held) - renewed):
            log.warning("camera %s: lease lost to another instance; stopping it", cam)
            self.stats.lost += 1
            await self._stop(cam)
        for cam in sorted(renewed & set(self.cameras)):
            if cam not in self.held:
                # Ours in the database but not running (e.g. stopped when the database was
                # away and nobody took it meanwhile): run it again.
                await self._start(cam, deadline)
            self.held[cam] = deadline
        view = await self._db(store.view(self.cameras))
        counts = {**view.counts, store.name: len(self.held)}
        give = excess(store.name, counts, len(self.cameras))
        if give:
            # The most recently listed go first: deterministic, and the same ones each time.
            out = sorted(self.held)[-give:]
            for cam in out:
                await self._stop(cam)
            await self._db(store.release(out))
            self.stats.released += len(out)
            log.info("released %s: %d instance(s) share %d camera(s)", out, len(counts),
                     len(self.cameras))  # fmt: skip
        # Nothing is taken on a tick that gave cameras back: they are for someone else.
        want = 0 if give else room(store.name, counts, len(self.cameras))
        if want:
            candidates = [c for c in self.cameras if c not in self.held]
            for cam in await self._db(store.acquire(candidates, want)):
                await self._start(cam, deadline)
        adopted = await self._db(store.adopt_orphans())
        if adopted:
            log.info("adopted %d unsent MQTT message(s) of instances gone", adopted)
        self.stats.ticks += 1

    async def _start(self, cam: str, deadline: float) -> None:
        self.held[cam] = deadline
        self.stats.taken += 1
        log.info("camera %s: lease taken; starting it", cam)
        await self.start(cam)

    async def _stop(self, cam: str) -> None:
        self.held.pop(cam, None)
        await self.stop(cam)

    async def _stop_overdue(self) -> None:
        now = time.monotonic()
        for cam, deadline in sorted(self.held.items()):
            if deadline <= now:
                log.warning(
                    "camera %s: lease ran out without renewal; stopping it so that no other "
                    "instance analyses it twice",
                    cam,
                )
                self.stats.expired += 1
                await self._stop(cam)

    def _next_wait(self) -> float:
        nearest = min(self.held.values(), default=float("inf"))
        return max(0.05, min(self.renew_s, nearest - time.monotonic()))

    async def _leave(self) -> None:
        for cam in sorted(self.held):
            with contextlib.suppress(Exception):
                await self._stop(cam)
        try:
            async with asyncio.timeout(_LEAVE_TIMEOUT_S):
                await self.store.leave()
        except (DatabaseError, TimeoutError) as exc:
            log.warning("camera leases not released (they run out by themselves): %s", exc)

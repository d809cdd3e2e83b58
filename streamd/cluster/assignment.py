"""Which cameras this instance runs: all of them (SQLite, one instance) or its leased share
(PostgreSQL, any number of instances). The daemon's one entry point into streamd.cluster."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic

from sqlalchemy.ext.asyncio import AsyncEngine

from streamd.cluster.keeper import LeaseKeeper
from streamd.cluster.leases import LeaseStore
from streamd.cluster.runner import CameraRunner, P, run_all_local
from streamd.config import Config
from streamd.events.change import EventChange
from streamd.events.db import DatabaseError
from streamd.events.store import EventStore

log = logging.getLogger(__name__)


@dataclass
class Assignment(Generic[P]):
    runner: CameraRunner[P]
    keeper: LeaseKeeper | None
    leases: LeaseStore | None
    on_taken: Callable[[str], None] | None = None  # a camera is about to start here (leases)

    @property
    def running(self) -> Mapping[str, P]:
        return self.runner.running

    async def run(self) -> None:
        """Run this instance's cameras until cancelled (then stop them and give them back)."""
        if self.keeper is None:
            await run_all_local(self.runner)
        else:
            await self.keeper.run()

    async def holders(self) -> dict[str, str]:
        """camera → the instance holding its lease now (cameras nobody holds are absent)."""
        if self.leases is None:
            return {}
        return {c: h.instance for c, h in (await self.leases.holders()).items()}


def clustered(engine: AsyncEngine) -> bool:
    """Leases need row locks and a shared server: PostgreSQL. SQLite is one instance."""
    return engine.dialect.name == "postgresql"


def assign_cameras(
    cfg: Config,
    engine: AsyncEngine,
    store: EventStore,
    pipelines: Mapping[str, P],
    submit: Callable[[EventChange], Awaitable[None]],
) -> Assignment[P]:
    if not clustered(engine):
        return Assignment(CameraRunner(pipelines, submit), None, None)

    async def end_leftovers(camera: str) -> None:
        # Events the camera's previous holder left open (it died or lost the database) end
        # now: this instance analyses the camera from here on.
        try:
            ended = await store.close_open(time.time(), camera=camera)
        except DatabaseError as exc:
            log.warning("camera %s: events left open by its previous holder not ended: %s",
                        camera, exc)  # fmt: skip
            return
        if ended:
            log.info("camera %s: ended %d event(s) its previous holder left open", camera,
                     len(ended))  # fmt: skip
        if assignment.on_taken is not None:
            assignment.on_taken(camera)

    runner = CameraRunner(pipelines, submit, before_start=end_leftovers)
    assignment = Assignment(runner, None, None)
    c = cfg.cluster
    leases = LeaseStore(engine, cfg.instance.name, c.lease_ttl_s)
    keeper = LeaseKeeper(
        leases, sorted(pipelines), runner.start, runner.stop, renew_s=c.renew_s, ttl_s=c.lease_ttl_s
    )
    assignment.keeper, assignment.leases = keeper, leases
    return assignment

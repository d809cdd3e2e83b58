"""Camera leases and instance heartbeats in PostgreSQL: the only shared state between instances.

Every time is the database's `now()`, so hosts with skewed clocks still agree on who holds what.
Taking a lease is one UPDATE over rows picked with `FOR UPDATE SKIP LOCKED` that re-checks, under
the row lock, that the lease is free or expired: two instances racing for one camera never both
get it, and neither waits for the other. Renewing touches only rows the caller still holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from streamd.events.db import DB_ERRORS, db_error
from streamd.events.models import CameraLease, ClusterInstance, Outbox

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a camera's lease, until when (database time)."""

    instance: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class View:
    """One consistent reading: live instances and how many of the given cameras each holds."""

    counts: dict[str, int]  # every live instance, zero for those holding none


class LeaseStore:
    """The lease and heartbeat tables, for the instance `name` (PostgreSQL only)."""

    def __init__(self, engine: AsyncEngine, name: str, ttl_s: float) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"camera leases need PostgreSQL, not {engine.dialect.name}")
        self.engine = engine
        self.name = name
        self.ttl = timedelta(seconds=ttl_s)
        self._session = async_sessionmaker(engine, expire_on_commit=False)

    async def _run(self, what: str, body: Callable[[AsyncSession], Awaitable[T]]) -> T:
        try:
            async with self._session() as session, session.begin():
                return await body(session)
        except DB_ERRORS as exc:
            raise db_error(what, self.engine.url, exc) from exc

    async def register(self, cameras: Iterable[str]) -> None:
        """One (free) lease row per camera, created once by whoever comes first."""
        rows = [{"camera": c} for c in sorted(set(cameras))]

        async def body(s: AsyncSession) -> None:
            if rows:
                await s.execute(insert(CameraLease).values(rows).on_conflict_do_nothing())

        await self._run("register camera leases", body)

    async def heartbeat(self) -> None:
        """Say this instance is alive for another TTL."""
        now = func.now()
        stmt = insert(ClusterInstance).values(
            name=self.name, started_at=now, heartbeat_at=now, expires_at=now + self.ttl
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[ClusterInstance.name],
            set_={"heartbeat_at": now, "expires_at": now + self.ttl},
        )

        async def body(s: AsyncSession) -> None:
            await s.execute(stmt)

        await self._run("renew the instance heartbeat", body)

    async def renew(self) -> set[str]:
        """Extend every lease this instance still holds; returns those cameras.

        A lease that ran out but that nobody took is still ours (holder unchanged), so renewing
        it is safe; one that another instance took is not in the answer: that camera is lost.
        """
        stmt = (
            update(CameraLease)
            .where(CameraLease.holder == self.name)
            .values(expires_at=func.now() + self.ttl)
            .returning(CameraLease.camera)
        )

        async def body(s: AsyncSession) -> set[str]:
            return set((await s.scalars(stmt)).all())

        return await self._run("renew camera leases", body)

    async def acquire(self, cameras: Sequence[str], limit: int) -> list[str]:
        """Take up to `limit` of `cameras` whose lease is free or expired; returns those taken."""
        if limit <= 0 or not cameras:
            return []
        free = or_(CameraLease.holder.is_(None), CameraLease.expires_at < func.now())
        pick = (
            select(CameraLease.camera)
            .where(CameraLease.camera.in_(list(cameras)), free)
            .order_by(CameraLease.camera)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(CameraLease)
            # `free` again: re-evaluated on the locked row's latest version.
            .where(CameraLease.camera.in_(pick.scalar_subquery()), free)
            .values(holder=self.name, acquired_at=func.now(), expires_at=func.now() + self.ttl)
            .returning(CameraLease.camera)
        )

        async def body(s: AsyncSession) -> list[str]:
            return sorted((await s.scalars(stmt)).all())

        return await self._run("take camera leases", body)

    async def release(self, cameras: Iterable[str]) -> None:
        """Give leases back (only those still ours)."""
        names = list(cameras)
        if not names:
            return
        stmt = (
            update(CameraLease)
            .where(CameraLease.holder == self.name, CameraLease.camera.in_(names))
            .values(holder=None, acquired_at=None, expires_at=None)
        )

        async def body(s: AsyncSession) -> None:
            await s.execute(stmt)

        await self._run("release camera leases", body)

    async def leave(self) -> None:
        """Release everything and remove the heartbeat: the others rebalance at once."""

        async def body(s: AsyncSession) -> None:
            await s.execute(
                update(CameraLease)
                .where(CameraLease.holder == self.name)
                .values(holder=None, acquired_at=None, expires_at=None)
            )
            await s.execute(delete(ClusterInstance).where(ClusterInstance.name == self.name))

        await self._run("leave the cluster", body)

    async def view(self, cameras: Sequence[str]) -> View:
        """Live instances (this one included) and how many of `cameras` each holds."""
        live = select(ClusterInstance.name).where(ClusterInstance.expires_at > func.now())
        held = (
            select(CameraLease.holder, func.count())
            .where(
                CameraLease.camera.in_(list(cameras)),
                CameraLease.holder.is_not(None),
                CameraLease.expires_at > func.now(),
            )
            .group_by(CameraLease.holder)
        )

        async def body(s: AsyncSession) -> View:
            counts = {str(n): 0 for n in (await s.scalars(live)).all()}
            counts.setdefault(self.name, 0)
            for holder, n in (await s.execute(held)).all():
                if holder in counts:
                    counts[str(holder)] = int(n)
            return View(counts)

        return await self._run("read the camera leases", body)

    async def holders(self) -> dict[str, Holder]:
        """Every camera whose lease is held and unexpired, with its holder."""
        stmt = select(CameraLease.camera, CameraLease.holder, CameraLease.expires_at).where(
            CameraLease.holder.is_not(None), CameraLease.expires_at > func.now()
        )

        async def body(s: AsyncSession) -> dict[str, Holder]:
            rows = (await s.execute(stmt)).all()
            return {str(c): Holder(str(h), e) for c, h, e in rows if e is not None}

        return await self._run("read the camera leases", body)

    async def adopt_orphans(self) -> int:
        """Take over the unsent MQTT messages of instances gone for over a TTL.

        Each instance publishes only its own outbox rows (so each message goes out once); an
        instance that died and does not come back under its name would otherwise strand its
        last messages. Returns how many rows this instance adopted.
        """
        gone = select(ClusterInstance.name).where(
            ClusterInstance.expires_at < func.now() - self.ttl
        )

        async def body(s: AsyncSession) -> int:
            names = [
                str(n) for n in (await s.scalars(gone.with_for_update(skip_locked=True))).all()
            ]
            if not names:
                return 0
            result = await s.execute(
                update(Outbox)
                .where(and_(Outbox.instance.in_(names), Outbox.sent_at.is_(None)))
                .values(instance=self.name)
            )
            await s.execute(delete(ClusterInstance).where(ClusterInstance.name.in_(names)))
            return int(getattr(result, "rowcount", 0) or 0)

        return await self._run("adopt stranded outbox rows", body)

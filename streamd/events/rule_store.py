"""Rules added at run time (HTTP API), kept in SQL so they survive restarts.

Database failures raise DatabaseError (the API answers 503 for it), never a driver's exception.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from streamd.config import RuleConfig
from streamd.events.db import DB_ERRORS, db_error
from streamd.events.models import StoredRule


class RuleStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False)

    async def _list(self) -> list[RuleConfig]:
        async with self._session() as s:
            rows = (await s.execute(select(StoredRule).order_by(StoredRule.created_at))).scalars()
            return [
                RuleConfig(
                    name=r.name,
                    text=r.text,
                    cameras=r.cameras,
                    cooldown_s=r.cooldown_s,
                    clear_s=r.clear_s,
                    severity=r.severity,
                )
                for r in rows
            ]

    async def _add(self, rule: RuleConfig) -> None:
        async with self._session.begin() as s:
            s.add(
                StoredRule(
                    name=rule.name,
                    text=rule.text,
                    cameras=rule.cameras,
                    cooldown_s=rule.cooldown_s,
                    clear_s=rule.clear_s,
                    severity=rule.severity,
                )
            )

    async def list(self) -> list[RuleConfig]:
        try:
            return await self._list()
        except DB_ERRORS as exc:
            raise db_error("read the stored rules", self._engine.url, exc) from exc

    async def add(self, rule: RuleConfig) -> None:
        try:
            await self._add(rule)
        except DB_ERRORS as exc:
            raise db_error(f"store rule {rule.name}", self._engine.url, exc) from exc

    async def delete(self, name: str) -> None:
        try:
            async with self._session.begin() as s:
                await s.execute(delete(StoredRule).where(StoredRule.name == name))
        except DB_ERRORS as exc:
            raise db_error(f"delete rule {name}", self._engine.url, exc) from exc

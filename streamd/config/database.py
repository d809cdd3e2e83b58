"""The `database:` section."""

from __future__ import annotations

from pydantic import Field, field_validator

from streamd.config.base import StrictModel
from streamd.config.secrets import redact_url


class DatabaseConfig(StrictModel):
    url: str = Field(
        "sqlite+aiosqlite:///streamd.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///FILE (default) or "
        "postgresql+asyncpg://user@host/db; plain sqlite:// and postgresql:// get async drivers.",
    )
    outage_budget_s: float = Field(
        600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="How long the database may be unreachable with no event change lost: "
        "changes wait in memory and a journal under data_dir/journal and are written in order "
        "when it is back. Past this, new events and updates are dropped (counted); the ends "
        "of events already kept are still kept.",
    )
    journal_max_mb: float = Field(
        256.0, gt=0, description="Cap of that journal on disk, whatever the budget."
    )

    @field_validator("url")
    @classmethod
    def _async_driver(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep:
            # Not echoed: without a scheme there is no telling which part is a password.
            raise ValueError("not a database URL (expected e.g. sqlite+aiosqlite:///x.db)")
        base = scheme.split("+", 1)[0]
        if base == "sqlite":
            url = f"sqlite+aiosqlite://{rest}"
        elif base in ("postgresql", "postgres"):
            url = f"postgresql+asyncpg://{rest}"
        else:
            raise ValueError(f"unsupported database {scheme!r}: use sqlite or postgresql")
        # SQLAlchemy is imported here, not at module level: loading a config stays light.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except (ArgumentError, ValueError) as exc:
            # SQLAlchemy's messages name the bad part (e.g. a non-numeric port), never the URL.
            raise ValueError(f"cannot parse database URL {redact_url(v)}: {exc}") from None
        return url

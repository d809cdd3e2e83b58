"""Database engine and schema migrations (Alembic, run programmatically: no alembic.ini)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util.exc import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from streamd.errors import SchemaMissing, StreamdError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE (see make_engine).
SQLITE_WRITE_OPTION = "streamd_sqlite_write"

_SQLITE_BUSY_TIMEOUT_S = 15.0
_PG_CONNECT_TIMEOUT_S = 10.0


# asyncpg's connect errors (refused, timed out) reach us as OSError, not wrapped by SQLAlchemy.
DB_ERRORS = (SQLAlchemyError, OSError)


class DatabaseError(StreamdError):
    """The database cannot be reached, or a migration failed; the message names the database
    (password hidden) and the cause."""


def db_error(what: str, url: str | URL, exc: BaseException) -> DatabaseError:
    """`cannot <what> in <url>: <cause>`, one line, password hidden."""
    # SQLAlchemy appends the statement and its parameters on later lines; keep logs short.
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    return DatabaseError(f"cannot {what} in {safe_url(url)}: {type(exc).__name__}: {first}")


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"invalid database URL {safe_url(url)}: {exc}") from exc


def _ensure_sqlite_dir(url: URL) -> None:
    if url.get_backend_name() != "sqlite":
        return
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the directory of SQLite database {database}: {exc.strerror}"
        ) from exc


def make_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url` (sqlite+aiosqlite or postgresql+asyncpg).

    SQLite: the file's directory is created; WAL (readers do not block the writer) and foreign keys
    are switched on per connection; and transactions on `engine.execution_options(
    **{SQLITE_WRITE_OPTION: True})` start with BEGIN IMMEDIATE, because a deferred transaction that
    reads and then writes fails at once with "database is locked" when another connection
    committed in between, instead of waiting for the busy timeout.
    PostgreSQL: connections are pinged on checkout so a restarted server costs no failed query.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        _ensure_sqlite_dir(parsed)
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", _SQLITE_BUSY_TIMEOUT_S)
        engine = _create(parsed, connect_args=connect_args, **kwargs)
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", _PG_CONNECT_TIMEOUT_S)
        kwargs.setdefault("pool_pre_ping", True)
        return _create(parsed, connect_args=connect_args, **kwargs)
    raise DatabaseError(f"unsupported database {safe_url(parsed)}: use sqlite or postgresql")


def _create(url: URL, **kwargs: Any) -> AsyncEngine:
    try:
        return create_async_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseError(f"cannot use database {safe_url(url)}: {exc}") from exc


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (the driver's own implicit
        # BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(SQLITE_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def write_engine(engine: AsyncEngine) -> AsyncEngine:
    """A view of `engine` (same pool) whose transactions take SQLite's write lock up front."""
    return engine.execution_options(**{SQLITE_WRITE_OPTION: True})


async def ping(engine: AsyncEngine) -> None:
    """Raise DatabaseError unless a trivial query succeeds."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise DatabaseError(
            f"cannot reach database {safe_url(engine.url)}: {_reason(exc)}"
        ) from exc


def alembic_config(url: str | URL) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's ini parser interpolates %, which URL-encoded passwords contain.
    rendered = _parse(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    parsed = _parse(url)
    if parsed.get_backend_name() == "postgresql":
        # asyncpg waits 60 s for an unanswering host by default; fail start-up sooner.
        cfg.attributes["connect_args"] = {"timeout": _PG_CONNECT_TIMEOUT_S}
    elif parsed.get_backend_name() == "sqlite":
        cfg.attributes["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
    return cfg


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision` (default: the newest)."""
    await _run_alembic(url, "upgrade", revision)


async def downgrade(url: str | URL, revision: str) -> None:
    """Migrate the database at `url` down to `revision` ("base" drops every table)."""
    await _run_alembic(url, "downgrade", revision)


async def current_revision(url: str | URL) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: Connection) -> str | None:
                return MigrationContext.configure(sync_conn).get_current_revision()

            return await conn.run_sync(read)
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise DatabaseError(f"cannot reach database {safe_url(url)}: {_reason(exc)}") from exc
    finally:
        await engine.dispose()


def _locked(
    url: URL, fn: Callable[[AlembicConfig, str], None], cfg: AlembicConfig, rev: str
) -> None:
    """Run an Alembic command holding a cross-process lock for SQLite files.

    SQLite DDL is not transactional in Alembic, so two processes migrating a fresh file at once
    (the daemon starting while `streamd events` runs) would both try to create the tables.
    PostgreSQL is serialised by an advisory lock in migrations/env.py instead.
    """
    db = url.database if url.get_backend_name() == "sqlite" else None
    if not db or db == ":memory:":
        fn(cfg, rev)
        return
    with open(f"{db}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            fn(cfg, rev)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _run_alembic(url: str | URL, action: str, revision: str) -> None:
    parsed = _parse(url)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(f"unsupported database {safe_url(parsed)}: use sqlite or postgresql")
    _ensure_sqlite_dir(parsed)
    cfg = alembic_config(parsed)
    fn = command.upgrade if action == "upgrade" else command.downgrade
    log.info("database %s: %s to %s", safe_url(parsed), action, revision)
    try:
        # env.py starts its own event loop (asyncio.run), which needs a thread without one.
        await asyncio.to_thread(_locked, parsed, fn, cfg, revision)
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise DatabaseError(f"cannot {action} database {safe_url(parsed)}: {_reason(exc)}") from exc
    except CommandError as exc:
        raise DatabaseError(f"cannot {action} database {safe_url(parsed)}: {exc}") from exc


def _reason(exc: BaseException) -> str:
    """A one-line cause without the SQL text or bound parameters SQLAlchemy appends."""
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    # The async drivers' adapters wrap the driver's own exception, whose type name says more.
    for _ in range(3):
        if cause.__cause__ is None:
            break
        cause = cause.__cause__
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _sqlite_revision(path: str) -> str | None:
    """The Alembic revision of a SQLite file, read through a read-only connection: opening it
    through the engine would switch the file to WAL, a write."""
    import sqlite3

    uri = f"{Path(path).expanduser().resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_SQLITE_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from exc
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise DatabaseError(f"cannot read SQLite database {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise DatabaseError(f"cannot read SQLite database {path}: {exc}") from exc
    finally:
        conn.close()
    return None if row is None else str(row[0])


async def require_current(url: str | URL) -> None:
    """Raise SchemaMissing unless the database exists at the newest schema.

    For read-only commands (`streamd events`): unlike `upgrade`, this creates no file, table or
    directory and changes nothing, so pointing one at a wrong path or an old database is safe.
    """
    from alembic.script import ScriptDirectory

    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:") or not await asyncio.to_thread(
            lambda: Path(db).expanduser().is_file()
        ):
            raise SchemaMissing(
                f"no database at {safe_url(parsed)}: start the daemon once, or run "
                "`streamd db upgrade`, to create it"
            )
        current = await asyncio.to_thread(_sqlite_revision, db)
    else:
        current = await current_revision(parsed)
    head = ScriptDirectory.from_config(alembic_config(parsed)).get_current_head()
    if current != head:
        raise SchemaMissing(
            f"database {safe_url(parsed)} is at schema {current or 'none (no streamd tables)'}, "
            f"this streamd reads {head}: run `streamd db upgrade` first"
        )

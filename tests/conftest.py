"""Shared fixtures: footage, RTSP clips, a fresh PostgreSQL database, unique MQTT prefixes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clips import ClipUnavailable
from support.daemon import MODEL, SHARED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): footage and models live there")
    return SHARED


@pytest.fixture(scope="session")
def model_path(shared_dir: Path) -> Path:
    if not MODEL.is_file():
        pytest.skip(f"detector model missing: {MODEL}")
    return MODEL


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


def clip_or_skip(make: object, *args: object, **kwargs: object) -> Path:
    try:
        return make(*args, **kwargs)  # type: ignore[operator,no-any-return]
    except ClipUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def mqtt_prefix() -> str:
    return f"streamd-test-{uuid.uuid4().hex[:10]}"


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"streamd_e2e_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    except (OSError, Exception) as exc:  # asyncpg raises its own errors for auth/refusal
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}")
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

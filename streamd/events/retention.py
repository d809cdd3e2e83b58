"""Retention: ended events by age, event snapshots by age and by total size per camera.

Run by the daemon's APScheduler job (`streamd.ops`). Snapshot files are deleted only after the
rows that name them stopped naming them (committed first): a crash in between leaves an orphan
file, which the next run's size and age limits still see and remove, never a row pointing at a
missing file. Token windows bound themselves (`window_tokens`, `window.max_age_s`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from streamd.config import RetentionConfig
from streamd.events.db import DatabaseError, safe_url, write_engine
from streamd.events.models import Event
from streamd.events.store import EventStore

log = logging.getLogger(__name__)

_BATCH = 500
OUTBOX_KEEP = timedelta(days=1)


@dataclass
class RetentionStats:
    """Totals since start, for /metrics and the log."""

    runs: int = 0
    failures: int = 0
    events_deleted: int = 0
    snapshots_deleted: int = 0
    snapshot_bytes_deleted: int = 0
    outbox_purged: int = 0
    snapshot_bytes: dict[str, int] = field(default_factory=dict)  # per camera, after a run


@dataclass(frozen=True, slots=True)
class _File:
    camera: str
    path: Path
    mtime: float
    size: int


def _scan(directory: Path) -> dict[str, list[_File]]:
    """Snapshot files per camera (sub-directory), oldest first."""
    out: dict[str, list[_File]] = {}
    if not directory.is_dir():
        return out
    for cam_dir in directory.iterdir():
        if not cam_dir.is_dir():
            continue
        files = []
        for entry in os.scandir(cam_dir):
            # Temporary files of a snapshot being written start with ".": never touch them.
            if entry.name.startswith(".") or not entry.name.endswith(".jpg"):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            files.append(_File(cam_dir.name, Path(entry.path), st.st_mtime, st.st_size))
        files.sort(key=lambda f: (f.mtime, f.path.name))
        out[cam_dir.name] = files
    return out


def _doomed(
    files: dict[str, list[_File]], max_age_s: float | None, max_bytes: int, now: float
) -> list[_File]:
    doomed: list[_File] = []
    for cam_files in files.values():
        total = sum(f.size for f in cam_files)
        for f in cam_files:  # oldest first
            too_old = max_age_s is not None and now - f.mtime > max_age_s
            if not too_old and total <= max_bytes:
                break
            doomed.append(f)
            total -= f.size
    return doomed


class Retention:
    def __init__(self, store: EventStore, cfg: RetentionConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.stats = RetentionStats()
        self._write = async_sessionmaker(write_engine(store.engine), expire_on_commit=False)

    async def run(self, now: float | None = None) -> RetentionStats:
        """One pass; raises DatabaseError (the job logs it and tries again next time)."""
        now = time.time() if now is None else now
        self.stats.runs += 1
        try:
            cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=self.cfg.events_days)
            events = await self.store.delete_ended_before(cutoff)
            purged = await self.store.outbox.purge_sent(
                datetime.fromtimestamp(now, UTC) - OUTBOX_KEEP
            )
            files, freed = await self._snapshots(now)
        except DatabaseError:
            self.stats.failures += 1
            raise
        self.stats.events_deleted += events
        self.stats.outbox_purged += purged
        self.stats.snapshots_deleted += files
        self.stats.snapshot_bytes_deleted += freed
        if events or files:
            log.info(
                "retention: deleted %d events, %d snapshots (%.1f MB), %d sent outbox rows",
                events,
                files,
                freed / 1e6,
                purged,
            )
        return self.stats

    async def _snapshots(self, now: float) -> tuple[int, int]:
        directory = self.store.snapshot_dir
        files = await asyncio.to_thread(_scan, directory)
        max_age = None if self.cfg.snapshots_days is None else self.cfg.snapshots_days * 86400
        doomed = _doomed(files, max_age, int(self.cfg.snapshots_max_mb * 1e6), now)
        kept = {cam: sum(f.size for f in fs) for cam, fs in files.items()}
        for f in doomed:
            kept[f.camera] -= f.size
        self.stats.snapshot_bytes = kept
        if not doomed:
            return 0, 0
        for i in range(0, len(doomed), _BATCH):
            batch = doomed[i : i + _BATCH]
            await self._forget([f"{f.camera}/{f.path.name}" for f in batch])
            await asyncio.to_thread(_unlink, [f.path for f in batch])
        return len(doomed), sum(f.size for f in doomed)

    async def _forget(self, relpaths: list[str]) -> None:
        """The events keep their record but no longer claim a snapshot."""
        try:
            async with self._write() as session, session.begin():
                await session.execute(
                    update(Event)
                    .where(Event.snapshot_path.in_(relpaths))
                    .values(snapshot_path=None)
                )
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(
                f"cannot drop snapshot paths in {safe_url(self.store.engine.url)}: "
                f"{type(exc).__name__}"
            ) from exc


def _unlink(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("retention: cannot delete %s: %s", path, exc.strerror)

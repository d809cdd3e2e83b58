"""Operations on a schedule (APScheduler 3): retention, `<prefix>/stats`, camera status, health.

`<prefix>/stats` (not retained) goes out every `mqtt.stats_interval_s`; each camera's retained
`<prefix>/<camera>/status` goes out with it, and also within `STATUS_CHECK_S` whenever the
camera goes on- or offline (Home Assistant's online sensor reads it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from streamd import __version__
from streamd.config import Config
from streamd.events.db import DatabaseError
from streamd.events.models import Event, Outbox
from streamd.events.mqtt import MqttPublisher
from streamd.events.retention import Retention
from streamd.events.store import EventStore
from streamd.events.topics import camera_status_topic, stats_topic
from streamd.pipeline import CameraPipeline

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

STATUS_CHECK_S = 5.0
RETENTION_FIRST_RUN_S = 30.0


@dataclass(frozen=True, slots=True)
class SqlCounts:
    """What the event log holds now, per (camera, rule)."""

    events: dict[tuple[str, str], int]
    open_events: dict[tuple[str, str], int]
    outbox_pending: int


async def sql_counts(engine: AsyncEngine) -> SqlCounts:
    """Counts straight from SQL (so /metrics and stats agree with `streamd events`)."""
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        Event.camera,
                        Event.rule,
                        func.count(),
                        func.count(Event.id).filter(Event.ended_at.is_(None)),
                    ).group_by(Event.camera, Event.rule)
                )
            ).all()
            pending = (
                await conn.execute(
                    select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))
                )
            ).scalar_one()
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseError(f"cannot count events: {type(exc).__name__}") from exc
    return SqlCounts(
        events={(r[0], r[1]): int(r[2]) for r in rows},
        open_events={(r[0], r[1]): int(r[3]) for r in rows},
        outbox_pending=int(pending),
    )


@dataclass
class _Rate:
    at: float
    analysed: int


@dataclass
class Operations:
    config: Config
    store: EventStore
    pipelines: dict[str, CameraPipeline]
    publisher: MqttPublisher | None = None
    retention: Retention = field(init=False)
    started: float = field(default_factory=time.time)
    stats_published: int = 0
    _rates: dict[str, _Rate] = field(default_factory=dict)
    _fps: dict[str, float] = field(default_factory=dict)
    _online: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.retention = Retention(self.store, self.config.retention)
        now = time.monotonic()
        for name, p in self.pipelines.items():
            self._rates[name] = _Rate(now, p.perception.stats.analysed)

    # -- scheduling ------------------------------------------------------------------------

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        cfg = self.config
        now = datetime.now(UTC)
        scheduler.add_job(
            self.run_retention,
            "interval",
            seconds=cfg.retention.interval_s,
            next_run_time=now + timedelta(seconds=RETENTION_FIRST_RUN_S),
            id="retention",
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self.log_health,
            "interval",
            seconds=cfg.retention.health_interval_s,
            id="health",
            coalesce=True,
        )
        if self.publisher is not None:
            interval = cfg.mqtt.stats_interval_s if cfg.mqtt is not None else 60.0
            scheduler.add_job(
                self.publish_stats,
                "interval",
                seconds=interval,
                next_run_time=now,
                id="stats",
                max_instances=1,
                coalesce=True,
            )
            scheduler.add_job(
                self.check_status,
                "interval",
                seconds=min(STATUS_CHECK_S, interval),
                id="status",
                coalesce=True,
            )

    # -- jobs --------------------------------------------------------------------------------

    async def run_retention(self) -> None:
        try:
            await self.retention.run()
        except DatabaseError as exc:
            log.warning(
                "retention skipped: %s (next try in %.0f s)", exc, self.config.retention.interval_s
            )
        except Exception:
            log.exception("retention job failed")

    async def publish_stats(self) -> None:
        """`<prefix>/stats` and every camera's retained status."""
        pub = self.publisher
        if pub is None:
            return
        self._update_rates()
        cameras = {name: self.camera_status(name) for name in self.pipelines}
        for name, status in cameras.items():
            self._publish_status(name, status)
        doc: dict[str, Any] = {
            "time": round(time.time(), 3),
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "cameras": cameras,
            "mqtt": {"published": pub.stats.published, "reconnects": pub.stats.reconnects},
            "retention": {
                "events_deleted": self.retention.stats.events_deleted,
                "snapshots_deleted": self.retention.stats.snapshots_deleted,
            },
            "events": None,
            "open_events": None,
            "outbox_pending": None,
        }
        try:
            counts = await sql_counts(self.store.engine)
        except DatabaseError as exc:
            log.debug("stats without SQL counts: %s", exc)
        else:
            doc["events"] = sum(counts.events.values())
            doc["open_events"] = sum(counts.open_events.values())
            doc["outbox_pending"] = counts.outbox_pending
        pub.publish_live(stats_topic(pub.prefix), json.dumps(doc, separators=(",", ":")))
        self.stats_published += 1

    async def check_status(self) -> None:
        """Publish a camera's status at once when it goes on- or offline."""
        for name, p in self.pipelines.items():
            if self._online.get(name) != p.camera.health.online:
                self._publish_status(name, self.camera_status(name))

    async def log_health(self) -> None:
        for name, p in self.pipelines.items():
            cam = p.camera
            log.info(
                "health %s: online=%s decoded=%d sampled=%d analysed=%d gated=%d dropped=%d "
                "reconnects=%d",
                name,
                cam.health.online,
                cam.stats.decoded,
                cam.stats.sampled,
                p.perception.stats.analysed,
                p.perception.stats.gated,
                cam.dropped,
                cam.health.reconnects,
            )

    # -- payloads ----------------------------------------------------------------------------

    def _update_rates(self) -> None:
        now = time.monotonic()
        for name, p in self.pipelines.items():
            analysed = p.perception.stats.analysed
            last = self._rates.get(name)
            if last is not None and now > last.at:
                self._fps[name] = max(0.0, (analysed - last.analysed) / (now - last.at))
            self._rates[name] = _Rate(now, analysed)

    def camera_status(self, name: str) -> dict[str, Any]:
        p = self.pipelines[name]
        cam = p.camera
        return {
            "camera": name,
            "online": bool(cam.health.online),
            "fps": p.config.fps,
            "analysed_fps": round(self._fps.get(name, 0.0), 3),
            "decoded_frames": cam.stats.decoded,
            "sampled_frames": cam.stats.sampled,
            "analysed_frames": p.perception.stats.analysed,
            "gated_frames": p.perception.stats.gated,
            "dropped_frames": cam.dropped,
            "reconnects": cam.health.reconnects,
            "last_error": cam.stats.last_error or None,
            "rules": [r.name for r, _ in p.rules],
            "time": round(time.time(), 3),
        }

    def publish_stopped(self, cameras: Iterable[str] | None = None) -> None:
        """Queue every camera's status (or those named) as offline (the daemon is stopping, or
        the camera moved to another instance): the retained status must not claim a camera
        online here after it stopped."""
        for name in self.pipelines if cameras is None else cameras:
            self._publish_status(name, {**self.camera_status(name), "online": False})

    def _publish_status(self, name: str, status: dict[str, Any]) -> None:
        if self.publisher is None:
            return
        self._online[name] = bool(status["online"])
        topic = camera_status_topic(self.publisher.prefix, name)
        self.publisher.publish_live(topic, json.dumps(status, separators=(",", ":")), retain=True)

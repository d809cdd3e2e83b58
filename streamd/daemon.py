"""The supervisor: one TaskGroup owning every camera pipeline, the API, the scheduler and MQTT.

Shutdown order matters and is explicit: stop the cameras first, end their open events (so the
last `end` envelopes and OFF states reach the outbox), write what the event writer still holds
(or keep it in its journal), then let the publisher drain the outbox and publish `offline`, then
close the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from streamd.api import ApiState, serve_api
from streamd.cluster.assignment import Assignment, assign_cameras, clustered
from streamd.config import CameraConfig, Config, MqttConfig
from streamd.config.loader import load_config
from streamd.errors import StreamdError
from streamd.events.change import EventChange
from streamd.events.db import DatabaseError, make_engine, upgrade
from streamd.events.discovery import CameraDevice, api_base_url
from streamd.events.mqtt import MqttPublisher, probe_broker
from streamd.events.rule_store import RuleStore
from streamd.events.store import EventStore
from streamd.events.topics import database_topic
from streamd.events.writer import EventWriter
from streamd.metrics import Metrics
from streamd.ops import Operations
from streamd.perception.detector import YOLOX_NANO_SHA256, load_detector
from streamd.perception.geometry import Detector
from streamd.perception.pool import InferencePool
from streamd.perception.pose import load_pose
from streamd.pipeline import CameraPipeline
from streamd.rules.compiler import compile_config_rule, verification_for
from streamd.rules.evaluate import site_zone
from streamd.rules.manager import RuleManager
from streamd.rules.plan import Plan
from streamd.rules.resolve import default_resolver
from streamd.verify import Verifier, load_verifier
from streamd.verify.config import RuleVerifyConfig
from streamd.verify.gate import VerifyGate

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 4.0
WRITER_SHUTDOWN_S = 1.0


def compile_plans(cfg: Config) -> dict[str, Plan]:
    return {r.name: compile_config_rule(cfg, r) for r in cfg.rules}


def _load_detector(cfg: Config) -> Detector | None:
    d = cfg.model.detector
    sha = d.sha256 or (YOLOX_NANO_SHA256 if d.url and d.url.endswith("yolox_nano.onnx") else None)
    detector = load_detector(
        d.path,
        d.url,
        sha,
        cfg.data_dir / "models",
        d.score_threshold,
        threads=cfg.inference.detector_threads,
        runtime=d.runtime,
        providers=d.providers,
        weak_threshold=d.weak_threshold,
    )
    if detector is not None:
        log.info("detector: %s on %s", detector.model_path.name, detector.runtime)
    if detector is None:
        log.warning(
            "no object detector: model %s not found and could not be downloaded; running with "
            "motion and static-scene analysis only (set model.detector.path)",
            d.path or "(no path)",
        )
    return detector


async def _choose_mqtt(cfg: Config) -> MqttConfig | None:
    m = cfg.mqtt
    if m is None:
        log.info("no MQTT configured: alerts go to SQL and the log only")
        return None
    if not m.required and not await probe_broker(m):
        log.warning(
            "no MQTT broker answered at %s:%d: alerts go to SQL and the log only", m.host, m.port
        )
        return None
    return m


@dataclass
class Daemon:
    config: Config
    config_path: Path | None = None  # where SIGHUP reloads the rules from
    _hup: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        cfg = self.config
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._hup.set)

        plans = compile_plans(cfg)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade(cfg.database.url)
        engine = make_engine(cfg.database.url)
        mqtt = await _choose_mqtt(cfg)
        base_url = api_base_url(cfg.api)
        store = EventStore(
            engine,
            cfg.data_dir / "snapshots",
            mqtt.topic_prefix if mqtt else None,
            # The store appends /api/events/<id>/snapshot.jpg (a base with that path doubled it).
            snapshot_url_base=base_url,
            instance=cfg.instance.name,
        )
        writer = EventWriter(
            store,
            cfg.data_dir / "journal",
            budget_s=cfg.database.outage_budget_s,
            journal_max_bytes=int(cfg.database.journal_max_mb * 1024 * 1024),
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                verifier = None
                if cfg.verify is not None:
                    verifier = await stack.enter_async_context(load_verifier(cfg.verify))
                await self._serve(cfg, stop, plans, engine, mqtt, store, writer, verifier)
        finally:
            writer.close()  # releases the data_dir lock on any failure
            await engine.dispose()
        log.info("stopped")

    async def _serve(
        self,
        cfg: Config,
        stop: asyncio.Event,
        plans: dict[str, Plan],
        engine: AsyncEngine,
        mqtt: MqttConfig | None,
        store: EventStore,
        writer: EventWriter,
        verifier: Verifier | None,
    ) -> None:
        # Changes a crash left in the journal go in first: they may open events that the next
        # step has to end.
        if await writer.open() and not await writer.write_backlog():
            raise DatabaseError(
                f"cannot write the event journal's changes: {writer.stats.last_error}"
            )
        # Events left open by a crash (kill -9, power loss) are ended now, not left dangling;
        # with instances sharing the database, only this instance's (the others' go when their
        # cameras are taken over).
        stale = await store.close_open(
            time.time(), instance=cfg.instance.name if clustered(engine) else None
        )
        if stale:
            log.info("ended %d events left open by the previous run", len(stale))
        detector = await asyncio.to_thread(_load_detector, cfg)
        pose = await asyncio.to_thread(load_pose, cfg.model.pose)
        from streamd.window.service import open_windows  # torch and models: not at import

        enabled = [name for name, cam in cfg.cameras.items() if cam.enabled]
        # Rule words (MiniLM) load in the background, so a rule posted later answers at once
        # without holding up the cameras (the configured rules are compiled already). A daemon
        # thread: it owns nothing but the resolver's cache, and a SIGTERM during the load must
        # not wait for it.
        threading.Thread(target=default_resolver().warm, name="rule-words", daemon=True).start()
        windows = await asyncio.to_thread(open_windows, cfg, enabled)

        recorded: Counter[tuple[str, str]] = Counter()  # for /metrics: events opened and logged

        async def sink(change: EventChange) -> None:
            # Never raises for the database: the writer buffers through outages (and logs
            # each change once it is durable).
            await writer.submit(change, str(change.details.get("severity", "warning")))
            if change.kind == "new":
                recorded[(change.camera, change.rule_name)] += 1

        def policy_for(rule_name: str) -> RuleVerifyConfig | None:
            found = rule_manager.config_rules.get(rule_name) or rule_manager.api_rules.get(
                rule_name
            )
            return None if found is None else verification_for(found[1], found[0])

        # Between rules and events: verified rules' events wait here for the VLM's verdict.
        gate = VerifyGate(verifier, policy_for, sink)

        # One pool of analysis workers for every camera (closed when the cameras have stopped).
        pool = InferencePool(cfg.inference.workers)
        pipelines = {
            name: CameraPipeline(
                name,
                cam,
                [(r, plans[r.name]) for r in cfg.rules_for(name)],
                detector,
                gate.submit,
                segment_s=cfg.segment_s,
                webrtc=cfg.webrtc,
                tz=site_zone(cfg.site.timezone),
                window=windows.windows.get(name) if windows is not None else None,
                pool=pool,
                pose=pose,
            )
            for name, cam in cfg.cameras.items()
            if cam.enabled
        }
        # All cameras, or this instance's leased share; `running` is what it analyses now.
        assignment = assign_cameras(cfg, engine, store, pipelines, gate.submit)
        running = assignment.runner.running
        rule_manager = RuleManager(
            pipelines,
            RuleStore(engine),
            gate.submit,
            {r.name: (r, plans[r.name]) for r in cfg.rules},
            config=cfg,
        )
        await rule_manager.load()
        publisher = None
        if mqtt is not None:

            def entities() -> list[tuple[str, str]]:
                # Read live: rules added or removed through the API change these lists.
                return [(c, r.name) for c, p in pipelines.items() for r, _ in p.rules]

            publisher = MqttPublisher(
                mqtt,
                store,
                entities,
                cameras={
                    c: CameraDevice(c, camera_model(cam))
                    for c, cam in cfg.cameras.items()
                    if cam.enabled
                },
                base_url=api_base_url(cfg.api),
                instance=cfg.instance.name if assignment.keeper is not None else None,
            )
            status_topic, pub_ = database_topic(mqtt.topic_prefix), publisher
            writer.on_status = lambda st: pub_.publish_direct(status_topic, st.model_dump_json())
            pub_.publish_direct(status_topic, writer.status().model_dump_json())
            assignment.on_taken = publisher.camera_taken
        ops = Operations(cfg, store, running, publisher)
        assignment.runner.on_stopped = lambda cam: ops.publish_stopped([cam])
        api_state = ApiState(
            cfg,
            store,
            pipelines,
            plans,
            metrics=Metrics(
                store,
                running,
                publisher,
                ops,
                windows.windows if windows is not None else None,
                recorded,
                writer,
            ),
            search=windows.search if windows is not None else None,
            rules=rule_manager,
            reload=lambda: self.reload_rules(rule_manager),
            verdicts=gate.last_verdicts,
            running=running if assignment.keeper is not None else None,
            holders=assignment.holders if assignment.keeper is not None else None,
        )

        log.info(
            "streamd running: %d camera(s), %d rule(s), database %s, instance %s",
            len(pipelines),
            len(cfg.rules),
            engine.url.render_as_string(hide_password=True),
            cfg.instance.name,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                pub_task = (
                    tg.create_task(publisher.run(), name="mqtt") if publisher is not None else None
                )
                writer_task = tg.create_task(writer.run(), name="event-writer")
                work = tg.create_task(
                    self._work(assignment, api_state, ops, rule_manager), name="supervisor"
                )
                await stop.wait()
                log.info("shutting down")
                # A shutdown that overruns its budget twice over is stuck somewhere: leave
                # every thread's stack in the log to say where (the process is not killed).
                faulthandler.dump_traceback_later(2 * SHUTDOWN_BUDGET_S, exit=False)
                work.cancel()
                await asyncio.wait([work], timeout=SHUTDOWN_BUDGET_S / 2)
                now = time.time()
                for p in pipelines.values():
                    for change in p.close(now):
                        await gate.submit(change)
                await gate.drain()  # verdicts in flight still decide what is logged
                writer_task.cancel()
                await asyncio.wait([writer_task])
                await writer.shutdown(WRITER_SHUTDOWN_S)
                if pub_task is not None:
                    ops.publish_stopped()  # sent by the publisher's shutdown, before offline
                    pub_task.cancel()
        finally:
            await asyncio.to_thread(pool.close, SHUTDOWN_BUDGET_S / 2)
            if windows is not None:
                # Seals each window's active segment: a restart resumes all of it.
                await asyncio.to_thread(windows.close)

    async def reload_rules(self, manager: RuleManager) -> dict[str, list[str]]:
        """Re-read the config file and swap its rules in (all or nothing); cameras stay."""
        if self.config_path is None:
            raise StreamdError("running the built-in demo: there is no config file to reload")
        new = await asyncio.to_thread(load_config, self.config_path)
        if new.cameras != self.config.cameras:
            raise StreamdError(
                "camera settings changed in the file: restart streamd to apply them "
                "(rules were not reloaded)"
            )
        changed = await manager.reload(new)
        self.config = new
        return changed

    async def _on_hangup(self, manager: RuleManager) -> None:
        while True:
            await self._hup.wait()
            self._hup.clear()
            try:
                changed = await self.reload_rules(manager)
            except StreamdError as exc:
                log.error("SIGHUP: rules not reloaded: %s", exc)
            else:
                log.info("SIGHUP: rules reloaded from %s: %s", self.config_path, changed)

    async def _work(
        self,
        assignment: Assignment[CameraPipeline],
        api_state: ApiState,
        ops: Operations,
        rule_manager: RuleManager,
    ) -> None:
        cfg = self.config
        scheduler = AsyncIOScheduler(timezone=UTC)
        ops.schedule(scheduler)  # retention, health log, <prefix>/stats, camera status
        scheduler.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(assignment.run(), name="cameras")
                if cfg.api.enabled:
                    tg.create_task(serve_api(api_state), name="api")
                tg.create_task(self._on_hangup(rule_manager), name="sighup")
        finally:
            scheduler.shutdown(wait=False)


def camera_model(cam: CameraConfig) -> str:
    """What Home Assistant shows as the camera device's model."""
    if cam.url is not None:
        return "RTSP camera"
    if cam.webrtc == "whip":
        return "WebRTC camera (WHIP)"
    if cam.webrtc is not None:
        return "WebRTC camera (WHEP)"
    if cam.file is not None:
        return "video file"
    return "demo scene"


def demo_config(data_dir: Path = Path("streamd-data")) -> Config:
    """The embedded defaults `streamd run` uses with no config file."""
    from streamd.config import (
        DatabaseConfig,
        DetectorConfig,
        ModelConfig,
        RuleConfig,
    )

    shared_model = Path(__file__).resolve().parents[2] / "shared" / "models" / "yolox_nano.onnx"
    return Config(
        data_dir=data_dir,
        database=DatabaseConfig(url=f"sqlite+aiosqlite:///{data_dir / 'streamd.db'}"),
        mqtt=MqttConfig(required=False),
        model=ModelConfig(
            detector=DetectorConfig(path=shared_model if shared_model.is_file() else None)
        ),
        cameras={"demo": CameraConfig(demo=True, fps=1.0)},
        rules=[
            RuleConfig(
                name="unattended-bag",
                text="alert when a bag is left unattended for 10 seconds",
                cooldown_s=20,
            )
        ],
    )

"""One camera's pipeline: source → perception → rules → events, with the window on the side.

The window's encoder reads the same WorldStates from its own bounded queue in its own task, so
a slow encoder never delays an alert: when it falls behind, the oldest waiting state is
dropped (counted), never a rule evaluation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamd.config import CameraConfig, RuleConfig, WebRtcConfig
from streamd.events.change import EventChange
from streamd.ingest.backoff import Backoff
from streamd.ingest.base import FrameSource
from streamd.ingest.camera import Camera
from streamd.ingest.source import SourceSpec
from streamd.latency import LatencyRecorder
from streamd.perception.geometry import Detector
from streamd.perception.model import Perception
from streamd.perception.pool import InferencePool
from streamd.perception.pose import PoseEstimator
from streamd.perception.world import WorldState
from streamd.perception.zones import ZoneSet
from streamd.rules.engine import RuleRunner, RulesEngine
from streamd.rules.plan import Plan

log = logging.getLogger(__name__)

Sink = Callable[[EventChange], Awaitable[None]]


_WINDOW_QUEUE = 8  # world states waiting for the window's encoder


class WindowWriter(Protocol):
    """Where world states go to become tokens (the rolling window)."""

    def add(self, world: WorldState) -> None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class PipelineStats:
    observations: int = 0
    events: int = 0
    sink_errors: int = 0
    restarts: int = 0
    last_obs_at: float = 0.0
    analyse_s: float = 0.0
    window_dropped: int = 0
    skipped: int = 0  # frames skipped because analysis was still busy (back-pressure)


_RATE_WINDOW_S = 10.0


@dataclass
class CameraPipeline:
    name: str
    config: CameraConfig
    rules: list[tuple[RuleConfig, Plan]]
    detector: Detector | None
    sink: Sink
    segment_s: float = 2.0
    window: WindowWriter | None = None
    stats: PipelineStats = field(default_factory=PipelineStats)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    tz: dt.tzinfo | None = None  # the site's time zone, for clock times in rules
    # The daemon's shared inference pool; None: this camera analyses in its own thread.
    pool: InferencePool | None = None
    pose: PoseEstimator | None = None  # shared by every camera (perception/pose.py)

    def __post_init__(self) -> None:
        c = self.config
        self.camera: FrameSource
        if c.webrtc is not None:
            from streamd.ingest.webrtc import webrtc_source  # aiortc only where it is used

            self.camera = webrtc_source(self.name, c, self.webrtc)
        else:
            self.camera = self._pyav_camera()
        self.perception = Perception(
            self.detector,
            pose=self.pose,
            diff_threshold=c.diff_threshold,
            zones=ZoneSet.from_config(
                c.zones, {n: (ln.start, ln.end) for n, ln in c.lines.items()}
            ),
        )
        self.engine = RulesEngine(
            self.name,
            [self.runner(rule, plan) for rule, plan in self.rules],
            self.segment_s,
        )
        self.latency = LatencyRecorder(self.name)
        self._done_at: deque[float] = deque(maxlen=512)
        self._started = time.monotonic()

    def runner(self, rule: RuleConfig, plan: Plan) -> RuleRunner:
        """A rule's runner on this camera (its scene predicates score this camera's window)."""
        scene = None
        if self.window is not None and plan.needs_verifier():
            from streamd.window.scene_score import WindowSceneScorer

            scene = WindowSceneScorer(self.window)  # type: ignore[arg-type]
        return RuleRunner(self.name, rule, plan, self.tz, scene)

    def _pyav_camera(self) -> Camera:
        c = self.config
        return Camera(
            SourceSpec(
                camera=self.name,
                url=c.url,
                file=c.file,
                demo=c.demo,
                loop=c.loop,
                fps=c.fps,
                open_timeout_s=c.open_timeout_s,
                read_timeout_s=c.read_timeout_s,
            ),
            stall_timeout_s=c.stall_timeout_s,
            backoff_max_s=c.backoff_max_s,
        )

    async def run(self) -> None:
        """Run forever; an unexpected error restarts the pipeline, never the daemon."""
        backoff = Backoff(cap=30.0)
        while True:
            try:
                await self._run_once()
                return  # a non-looping file ended
            except Exception:
                self.stats.restarts += 1
                delay = backoff.next_delay()
                log.exception("camera %s: pipeline failed; restarting in %.1f s", self.name, delay)
                await asyncio.sleep(delay)

    async def _run_once(self) -> None:
        if self.window is None:
            await self._perceive(None)
            return
        queue: asyncio.Queue[WorldState] = asyncio.Queue(_WINDOW_QUEUE)
        async with asyncio.TaskGroup() as tg:
            encoder = tg.create_task(self._encode(queue), name=f"window:{self.name}")
            try:
                await self._perceive(queue)
            finally:
                encoder.cancel()

    async def _perceive(self, queue: asyncio.Queue[WorldState] | None) -> None:
        if self.pool is not None:
            await self._perceive_pooled(self.pool, queue)
            return
        skipped = self.stats.skipped  # counters carry on across restarts
        async for frame in self.camera.frames():
            self.stats.skipped = skipped + self.camera.dropped  # its slot kept only the latest
            t0 = time.perf_counter()
            world = await asyncio.to_thread(self.perception.observe, frame)
            self.stats.analyse_s += time.perf_counter() - t0
            await self._after(world, queue)
        await self._flush()

    async def _perceive_pooled(
        self, pool: InferencePool, queue: asyncio.Queue[WorldState] | None
    ) -> None:
        """Frames go to this camera's lane (latest wins); world states come back in order."""
        lane = pool.lane(self.name, self.perception.observe, self.config.fps)
        skipped, busy = self.stats.skipped, self.stats.analyse_s  # carried across restarts

        async def feed() -> None:
            try:
                async for frame in self.camera.frames():
                    lane.offer(frame)
                    # Counted as frames arrive: a stalled analysis still shows its skips.
                    self.stats.skipped = skipped + lane.stats.skipped
            finally:
                lane.end()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(feed(), name=f"frames:{self.name}")
                while (world := await lane.next()) is not None:
                    self.stats.analyse_s = busy + lane.stats.busy_s
                    await self._after(world, queue)
        finally:
            lane.close()
        await self._flush()

    async def _after(self, world: WorldState, queue: asyncio.Queue[WorldState] | None) -> None:
        """Everything one world state goes to: window, rules, events; then its latency."""
        self.stats.observations += 1
        self.stats.last_obs_at = world.ts
        self._done_at.append(time.monotonic())
        if queue is not None:
            if queue.full():
                queue.get_nowait()  # latest wins: the window may skip, alerts never wait
                self.stats.window_dropped += 1
            queue.put_nowait(world)
        for change in self.engine.feed(world):
            await self._emit(change)
        self.latency.observe(time.time() - world.frame.received_at)

    async def _flush(self) -> None:
        for change in self.engine.flush():
            await self._emit(change)

    @property
    def effective_fps(self) -> float:
        """World states per second over the recent window (shorter while just started)."""
        now = time.monotonic()
        span = min(_RATE_WINDOW_S, now - self._started)
        if span <= 0:
            return 0.0
        return sum(1 for t in self._done_at if t >= now - span) / span

    async def _encode(self, queue: asyncio.Queue[WorldState]) -> None:
        window = self.window
        assert window is not None
        while True:
            world = await queue.get()
            await asyncio.to_thread(window.add, world)

    async def _emit(self, change: EventChange) -> None:
        self.stats.events += 1
        try:
            await self.sink(change)
        except Exception:
            # The sink buffers through database outages and never raises for them; anything
            # else is a bug in the events stage, which must not restart this camera.
            self.stats.sink_errors += 1
            log.exception(
                "camera %s: event %s %s not recorded", self.name, change.kind, change.event_id
            )

    def close(self, now: float) -> list[EventChange]:
        """Pending segment plus an `end` for every open event (shutdown)."""
        return self.engine.close(now)

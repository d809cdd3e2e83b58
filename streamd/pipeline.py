"""One camera's pipeline: source → analysis → window → rules → events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamd.config import CameraConfig, RuleConfig, WebRtcConfig
from streamd.events.change import EventChange
from streamd.ingest.backoff import Backoff
from streamd.ingest.base import FrameSource
from streamd.ingest.camera import Camera
from streamd.ingest.source import SourceSpec
from streamd.rules.engine import RuleRunner, RulesEngine
from streamd.rules.plan import Plan
from streamd.window.analysis import Analyser, Observation
from streamd.window.detection import Detector

log = logging.getLogger(__name__)

Sink = Callable[[EventChange], Awaitable[None]]


class WindowWriter(Protocol):
    """Where observations go to become tokens (the rolling window)."""

    def add(self, obs: Observation) -> None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class PipelineStats:
    observations: int = 0
    events: int = 0
    sink_errors: int = 0
    restarts: int = 0
    last_obs_at: float = 0.0
    analyse_s: float = 0.0


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

    def __post_init__(self) -> None:
        c = self.config
        self.camera: FrameSource
        if c.webrtc is not None:
            from streamd.ingest.webrtc import webrtc_source  # aiortc only where it is used

            self.camera = webrtc_source(self.name, c, self.webrtc)
        else:
            self.camera = self._pyav_camera()
        self.analyser = Analyser(self.detector, diff_threshold=c.diff_threshold)
        self.engine = RulesEngine(
            self.name,
            [RuleRunner(self.name, rule, plan) for rule, plan in self.rules],
            self.segment_s,
        )

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
        async for frame in self.camera.frames():
            t0 = time.perf_counter()
            obs = await asyncio.to_thread(self.analyser.analyse, frame)
            if self.window is not None:
                await asyncio.to_thread(self.window.add, obs)
            self.stats.analyse_s += time.perf_counter() - t0
            self.stats.observations += 1
            self.stats.last_obs_at = obs.ts
            for change in self.engine.feed(obs):
                await self._emit(change)
        for change in self.engine.flush():
            await self._emit(change)

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

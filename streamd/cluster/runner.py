"""Start and stop camera pipelines one at a time, as leases come and go.

`running` is the live map of cameras this instance analyses now; the daemon hands the same dict
to everything that reports per camera (stats, status topics, metrics), so a camera another
instance holds is never reported here as offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from streamd.events.change import EventChange

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    async def run(self) -> None: ...

    def close(self, now: float) -> list[EventChange]: ...


P = TypeVar("P", bound=Pipeline)


@dataclass
class CameraRunner(Generic[P]):
    pipelines: Mapping[str, P]
    submit: Callable[[EventChange], Awaitable[None]]  # where a stopped camera's `end`s go
    before_start: Callable[[str], Awaitable[None]] | None = None
    on_stopped: Callable[[str], None] | None = None  # e.g. publish the camera offline
    running: dict[str, P] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def start(self, camera: str) -> None:
        if camera in self._tasks:
            return
        if self.before_start is not None:
            await self.before_start(camera)
        p = self.pipelines[camera]
        self.running[camera] = p
        self._tasks[camera] = asyncio.create_task(p.run(), name=f"camera-{camera}")

    async def stop(self, camera: str) -> None:
        """Stop the camera and end its open events (their `end`s go out as at shutdown)."""
        task = self._tasks.pop(camera, None)
        p = self.running.get(camera)
        if task is None or p is None:
            return
        task.cancel()
        await asyncio.wait([task])
        for change in p.close(time.time()):
            await self.submit(change)
        if self.on_stopped is not None:
            self.on_stopped(camera)  # while still listed as running here
        del self.running[camera]
        log.info("camera %s: stopped", camera)

    async def stop_all(self) -> None:
        for camera in sorted(self._tasks):
            await self.stop(camera)


async def run_all_local(runner: CameraRunner[P]) -> None:
    """One instance alone (SQLite): every camera is local, for as long as the daemon runs."""
    try:
        for camera in runner.pipelines:
            await runner.start(camera)
        await asyncio.Event().wait()
    finally:
        await runner.stop_all()

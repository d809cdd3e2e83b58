"""One inference worker pool shared by every camera, with fair, bounded back-pressure.

Each camera holds a `Lane`: at most one frame waiting (a newer frame replaces it and the skip is
counted), at most one job running, at most one result waiting for the camera's task. A worker
takes the waiting lane that started a job least recently, so under overload the pool serves
lanes round-robin: a camera asking for less than its share gets all it asks for and the cameras
asking for most are the ones slowed down (max-min fairness). Nothing ever queues up: memory and
latency stay bounded however many cameras share the cores, and a camera whose work is slow holds
one worker at most, never the others.

Detector calls are not batched across cameras: YOLOX-nano's batch dimension is fixed at 1, and
with it made dynamic (outputs identical) a batch of 2-8 ran slower per image than batch 1 on
this CPU (see bench/batching.py), so each job is one camera's whole perception step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["InferencePool", "Lane", "LaneStats", "default_workers"]

log = logging.getLogger(__name__)

T = TypeVar("T")  # what a lane is fed (a frame)
R = TypeVar("R")  # what its job returns (a world state)


def default_workers() -> int:
    """One worker per core: each detector call runs on one ONNX Runtime thread, so this keeps
    every core busy without oversubscribing them."""
    return max(1, os.cpu_count() or 1)


@dataclass
class LaneStats:
    submitted: int = 0
    processed: int = 0
    skipped: int = 0  # frames replaced before a worker took them (back-pressure)
    failed: int = 0
    busy_s: float = 0.0  # worker time spent on this lane's jobs


class Lane(Generic[T, R]):
    """One camera's place in the pool. `offer` and `next` are called on the event loop."""

    def __init__(
        self, pool: InferencePool, name: str, work: Callable[[T], R], target_fps: float | None
    ) -> None:
        self.pool = pool
        self.name = name
        self.work = work
        self.target_fps = target_fps
        self.stats = LaneStats()
        self._loop = asyncio.get_running_loop()
        self._pending: T | None = None
        self._busy = False  # a job is running or its result has not been taken yet
        self._last_start = 0.0
        self._ended = False
        self._result: tuple[R | None, BaseException | None] | None = None
        self._ready = asyncio.Event()

    def offer(self, item: T) -> None:
        """Queue `item` for analysis, replacing (and counting) one still waiting. Never blocks."""
        with self.pool.cond:
            if self._pending is not None:
                self.stats.skipped += 1
            self._pending = item
            self.stats.submitted += 1
            self.pool.cond.notify()

    def end(self) -> None:
        """No more items: `next` returns None once what is waiting has been analysed."""
        self._ended = True
        self._ready.set()

    async def next(self) -> R | None:
        """The next result, in order; re-raises the job's exception; None after `end`."""
        while self._result is None:
            if self._ended and not self._has_work():
                return None
            await self._ready.wait()
            self._ready.clear()
        value, error = self._result
        self._result = None
        with self.pool.cond:
            self._busy = False
            if self._pending is not None:
                self.pool.cond.notify()
        if error is not None:
            raise error
        return value

    def _has_work(self) -> bool:
        with self.pool.cond:
            return self._busy or self._pending is not None

    def close(self) -> None:
        """Leave the pool (the camera stopped); a job running finishes and is discarded."""
        self.pool.remove(self)

    # --- worker side (called with pool.cond held) ---

    def _eligible(self) -> bool:
        return self._pending is not None and not self._busy

    def _take(self) -> T:
        item = self._pending
        assert item is not None
        self._pending = None
        self._busy = True
        self._last_start = time.monotonic()
        return item

    def _deliver(self, value: R | None, error: BaseException | None) -> None:
        """On the loop: hand the result to `next`."""
        self._result = (value, error)
        self._ready.set()


class InferencePool:
    """Worker threads running camera lanes' jobs; `close` at shutdown."""

    def __init__(self, workers: int | None = None, name: str = "inference") -> None:
        self.workers = workers if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError(f"an inference pool needs at least 1 worker, got {self.workers}")
        self.cond = threading.Condition()
        self._lanes: list[Lane[object, object]] = []
        self._closed = False
        self._name = name
        # Started with the first lane: a daemon that fails before its cameras start leaves no
        # idle threads behind.
        self._threads: list[threading.Thread] = []

    def lane(
        self, name: str, work: Callable[[T], R], target_fps: float | None = None
    ) -> Lane[T, R]:
        """A new lane for one camera (call on the event loop that will read its results)."""
        lane: Lane[T, R] = Lane(self, name, work, target_fps)
        with self.cond:
            if self._closed:
                raise RuntimeError("the inference pool is closed")
            self._lanes.append(lane)  # type: ignore[arg-type]
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._worker, name=f"{self._name}-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for t in self._threads:
                    t.start()
        return lane

    def remove(self, lane: Lane[T, R]) -> None:
        with self.cond, contextlib.suppress(ValueError):
            self._lanes.remove(lane)  # type: ignore[arg-type]

    @property
    def lanes(self) -> list[Lane[object, object]]:
        with self.cond:
            return list(self._lanes)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop taking jobs; wait up to `timeout_s` for running ones. True if all stopped."""
        with self.cond:
            self._closed = True
            self.cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("inference workers still running at shutdown: %s", ", ".join(alive))
        return not alive

    def _pick(self) -> Lane[object, object] | None:
        best: Lane[object, object] | None = None
        for lane in self._lanes:
            if lane._eligible() and (best is None or lane._last_start < best._last_start):
                best = lane
        return best

    def _worker(self) -> None:
        while True:
            with self.cond:
                while not self._closed and (lane := self._pick()) is None:
                    self.cond.wait()
                if self._closed:
                    return
                assert lane is not None
                item = lane._take()
            t0 = time.perf_counter()
            value: object = None
            error: BaseException | None = None
            try:
                value = lane.work(item)
            except Exception as exc:  # the camera's task re-raises it; the worker lives on
                error = exc
            busy = time.perf_counter() - t0
            with self.cond:
                lane.stats.busy_s += busy
                lane.stats.processed += 1
                lane.stats.failed += error is not None
            # RuntimeError: the loop closed (shutdown); nobody is waiting for this result.
            with contextlib.suppress(RuntimeError):
                lane._loop.call_soon_threadsafe(lane._deliver, value, error)

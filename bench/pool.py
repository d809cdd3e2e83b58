"""K cameras' analysis through the shared inference pool vs the old per-camera to_thread path.

    python bench/pool.py [--cameras 4 16 32] [--seconds 10] [--fps 1] [--workers N]

Each simulated camera has its own Perception (YOLOX-nano + world model, one detector shared,
as in the daemon) and gets real footage (intel_one-by-one-person-detection.mp4, one frame a
second, scaled to 1280x720) at `--fps`, latest frame wins. Both paths see the same frames in
the same run:
- `to_thread`: what each CameraPipeline did before: `await asyncio.to_thread(observe, frame)`
  on asyncio's default executor, every camera for itself;
- `pool(W)`: one InferencePool of W workers (default: one per core) with a lane per camera.
Printed per K: analysed frames/s in all, per-camera effective fps (min / mean) against the
target, frames skipped, latency from frame receipt to result (p50 / p95), CPU cores used,
frames per CPU-second, and the pool's ratios to the baseline. On a machine shared with other
busy processes a process's CPU share grows with its runnable threads, which favours the
baseline's 6 executor threads in frames/s: read frames per CPU-second and latency there.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODEL = SHARED / "models" / "yolox_nano.onnx"
CLIP = SHARED / "media" / "intel_one-by-one-person-detection.mp4"

sys.path.insert(0, str(REPO))
from streamd.ingest.frame import Frame, Image  # noqa: E402
from streamd.perception.detector import YoloxDetector  # noqa: E402
from streamd.perception.model import Perception  # noqa: E402
from streamd.perception.pool import InferencePool, default_workers  # noqa: E402
from streamd.perception.world import WorldState  # noqa: E402


def footage(n: int) -> list[Image]:
    """n real frames, one a second, scaled to 720p (the clip is 768x432)."""
    out: list[Image] = []
    with av.open(str(CLIP)) as container:
        next_t = 0.0
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= next_t:
                out.append(cv2.resize(frame.to_ndarray(format="bgr24"), (1280, 720)))
                next_t += 1.0
                if len(out) == n:
                    break
    return out


@dataclass
class Cam:
    name: str
    perception: Perception
    frames: list[Image]
    offset: int
    latest: Frame | None = None
    offered: int = 0
    done: int = 0
    skipped: int = 0
    latency: list[float] = field(default_factory=list)
    new: asyncio.Event = field(default_factory=asyncio.Event)


async def produce(cam: Cam, fps: float, stop: float, offer: Callable[[Frame], None]) -> None:
    """A camera: a new frame every 1/fps s, stamped at receipt."""
    t0 = time.monotonic()
    while time.monotonic() < stop:
        image = cam.frames[(cam.offset + cam.offered) % len(cam.frames)]
        offer(Frame(cam.name, image, time.time(), None, cam.offered))
        cam.offered += 1
        await asyncio.sleep(max(0.0, t0 + cam.offered / fps - time.monotonic()))


def record(cam: Cam, world: WorldState, stop: float) -> None:
    # Only results within the run count: after it, the frames left waiting are drained with
    # no newer ones to replace them, which no live camera ever sees.
    if time.monotonic() <= stop:
        cam.done += 1
        cam.latency.append(time.time() - world.frame.received_at)


async def run_to_thread(cams: list[Cam], fps: float, stop: float) -> None:
    def offer_to(cam: Cam) -> Callable[[Frame], None]:
        def offer(frame: Frame) -> None:
            if cam.latest is not None:
                cam.skipped += 1
            cam.latest = frame
            cam.new.set()

        return offer

    async def analyse(cam: Cam) -> None:
        while time.monotonic() < stop:
            try:
                await asyncio.wait_for(cam.new.wait(), max(0.01, stop - time.monotonic()))
            except TimeoutError:
                return
            cam.new.clear()
            frame, cam.latest = cam.latest, None
            assert frame is not None
            record(cam, await asyncio.to_thread(cam.perception.observe, frame), stop)

    await asyncio.gather(
        *(produce(c, fps, stop, offer_to(c)) for c in cams), *(analyse(c) for c in cams)
    )


async def run_pool(cams: list[Cam], fps: float, stop: float, workers: int) -> None:
    pool = InferencePool(workers)
    try:
        lanes = {c.name: pool.lane(c.name, c.perception.observe, fps) for c in cams}

        async def camera(cam: Cam) -> None:
            lane = lanes[cam.name]

            async def feed() -> None:
                await produce(cam, fps, stop, lane.offer)
                lane.end()

            feeder = asyncio.create_task(feed())
            while (world := await lane.next()) is not None:
                record(cam, world, stop)
            await feeder
            cam.skipped = lane.stats.skipped

        await asyncio.gather(*(camera(c) for c in cams))
    finally:
        await asyncio.to_thread(pool.close, 10.0)


@dataclass
class Row:
    path: str
    k: int
    fps_total: float
    eff_min: float
    eff_mean: float
    skipped: int
    p50: float
    p95: float
    cores: float

    @property
    def per_cpu(self) -> float:
        """Frames analysed per CPU-second: the cost, whatever share of the cores we got."""
        return self.fps_total / self.cores if self.cores > 0 else 0.0


def measure(
    path: str,
    k: int,
    seconds: float,
    run: Callable[[list[Cam], float], Awaitable[None]],
    detector: YoloxDetector,
    frames: list[Image],
) -> Row:
    cams = [Cam(f"cam{i}", Perception(detector), frames, i * 7) for i in range(k)]
    cpu0, t0 = time.process_time(), time.monotonic()
    at_stop: list[float] = []

    async def timed() -> None:
        async def snapshot() -> None:
            await asyncio.sleep(seconds)  # the end of the measured run
            at_stop.append(time.process_time())

        await asyncio.gather(run(cams, t0 + seconds), snapshot())

    asyncio.run(timed())
    wall, cpu = seconds, at_stop[0] - cpu0
    eff = [c.done / seconds for c in cams]
    lat = [x for c in cams for x in c.latency] or [float("nan")]
    p50, p95 = np.quantile(lat, (0.5, 0.95))
    return Row(
        path,
        k,
        sum(c.done for c in cams) / seconds,
        min(eff),
        statistics.fmean(eff),
        sum(c.skipped for c in cams),
        float(p50),
        float(p95),
        cpu / wall,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=1.0, help="target fps per camera")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[default_workers()], help="pool sizes to run"
    )
    args = ap.parse_args()
    if not MODEL.is_file() or not CLIP.is_file():
        print(f"needs {MODEL} and {CLIP}", file=sys.stderr)
        return 2
    if args.seconds <= 0 or args.fps <= 0 or min(args.workers) < 1 or min(args.cameras) < 1:
        print("--seconds, --fps, --workers and --cameras must be positive", file=sys.stderr)
        return 2
    detector = YoloxDetector(MODEL)
    frames = footage(60)
    fps = args.fps
    print(
        f"{len(frames)} real frames at 1280x720, target {fps:g} fps per camera, "
        f"{args.seconds:g} s per run, detector {detector.runtime}"
    )
    header = (
        f"{'K':>3} {'path':<9} {'frames/s':>8} {'eff min':>7} {'eff mean':>8} {'skipped':>7} "
        f"{'p50 s':>6} {'p95 s':>6} {'cores':>5} {'f/cpu-s':>7} | {'fps ×':>5} {'min ×':>5} "
        f"{'p95 ×':>5} {'cpu ×':>5} {'f/cpu ×':>7}"
    )
    print(header)
    print("-" * len(header))
    for k in args.cameras:
        base = measure(
            "to_thread", k, args.seconds, lambda c, s: run_to_thread(c, fps, s), detector, frames
        )
        pools = [
            measure(
                f"pool({w})",
                k,
                args.seconds,
                lambda c, s, w=w: run_pool(c, fps, s, w),
                detector,
                frames,
            )
            for w in args.workers
        ]
        for r in (base, *pools):
            ratios = ""
            if r is not base:
                ratios = (
                    f" | {_ratio(r.fps_total, base.fps_total):>5} "
                    f"{_ratio(r.eff_min, base.eff_min):>5} {_ratio(r.p95, base.p95):>5} "
                    f"{_ratio(r.cores, base.cores):>5} {_ratio(r.per_cpu, base.per_cpu):>7}"
                )
            print(
                f"{r.k:>3} {r.path:<9} {r.fps_total:>8.2f} {r.eff_min:>7.2f} {r.eff_mean:>8.2f} "
                f"{r.skipped:>7} {r.p50:>6.2f} {r.p95:>6.2f} {r.cores:>5.2f} {r.per_cpu:>7.1f}"
                f"{ratios}"
            )
    return 0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "—"


if __name__ == "__main__":
    raise SystemExit(main())

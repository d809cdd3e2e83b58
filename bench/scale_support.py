"""Pieces of the scale benchmark (bench/scale.py): the camera clip, CPU/RSS of a process tree,
the daemon's per-camera counters, and the ffmpeg decode-everything baseline."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
# Six people come one at a time to a table, empty in between (media/README.md): the detector
# has people to find for part of the run and an empty room for the rest, as a real camera.
SOURCE_CLIP = MEDIA / "intel_one-by-one-person-detection.mp4"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamd" / "bench"
WIDTH, HEIGHT, FPS = 1280, 720, 25


class BenchError(RuntimeError):
    """Something the benchmark needs is missing or broke (the message says what)."""


# -- the clip --------------------------------------------------------------------------------
def clip_seconds(needed_s: float) -> int:
    """Clip length for a run that needs ``needed_s`` of stream per client, rounded up to 10 s so
    that nearby runs share one cached encode."""
    return max(20, math.ceil(needed_s / 10) * 10)


def prepare_clip(gop_s: int, seconds: int, cache_dir: Path, source: Path = SOURCE_CLIP) -> Path:
    """The real clip as a 1280x720 25 fps H.264 camera stream (no B-frames, a keyframe every
    ``gop_s`` seconds exactly), looped with ffmpeg to ``seconds`` long; encoded once and cached.

    The RTSP server ends a client's stream at the end of the file, so the clip is made long
    enough for the whole measurement instead of looping in the server."""
    if not source.is_file():
        raise BenchError(f"source footage missing: {source} (see ../shared/media/README.md)")
    stem = f"{source.stem}_{WIDTH}x{HEIGHT}p{FPS}_gop{gop_s}s_"
    out = cache_dir / f"{stem}{seconds}s.mp4"
    # any cached clip at least this long will do: the shortest of them
    cached: dict[int, Path] = {}
    for path in cache_dir.glob(f"{stem}*s.mp4"):
        length = path.name.removeprefix(stem).removesuffix("s.mp4")
        if length.isdigit() and int(length) >= seconds and path.stat().st_size > 0:
            cached[int(length)] = path
    if cached:
        return cached[min(cached)]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp.mp4")
    gop = gop_s * FPS
    cmd = [
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y",
        "-stream_loop", "-1", "-i", str(source), "-t", str(seconds), "-an",
        "-vf", f"scale={WIDTH}:{HEIGHT},fps={FPS}",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
        "-bf", "0", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-movflags", "+faststart", str(tmp),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    except FileNotFoundError as exc:
        raise BenchError("ffmpeg not found on PATH (apt-get install ffmpeg)") from exc
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"ffmpeg could not encode {source}: {proc.stderr.strip()[-500:]}")
    tmp.replace(out)  # atomic: a concurrent or killed run never leaves half a clip in the cache
    return out


# -- CPU and memory of a process tree ----------------------------------------------------------
def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class TreeMeter:
    """CPU seconds and RSS of some root processes and all their descendants, polled in a thread.

    Each process's own user + system time is remembered at every poll, so a descendant that
    exits inside the window counts up to its last poll; one that appears counts from its start.
    (The parent's children_* times are left out: they would count a reaped child twice.)"""

    roots: list[psutil.Process]
    interval: float = 0.5
    _first: dict[tuple[int, float], float] = field(default_factory=dict)
    _last: dict[tuple[int, float], float] = field(default_factory=dict)
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0
    _t1: float = 0.0

    def _poll(self) -> None:
        rss = 0
        for root in self.roots:
            for p in _tree(root):
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        key = (p.pid, p.create_time())
                        cpu = t.user + t.system
                        rss += p.memory_info().rss
                except psutil.Error:
                    continue
                self._first.setdefault(key, cpu if self._thread is None else 0.0)
                self._last[key] = cpu
        self.peak_rss = max(self.peak_rss, rss)

    def start(self) -> TreeMeter:
        self._poll()  # baseline of everything alive now
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def stop(self) -> TreeMeter:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._poll()
        self._t1 = time.monotonic()
        return self

    @property
    def seconds(self) -> float:
        return self._t1 - self._t0

    @property
    def cores(self) -> float:
        """Average cores busy over the window (CPU seconds / wall seconds)."""
        used = sum(self._last[k] - self._first.get(k, 0.0) for k in self._last)
        return used / self.seconds if self.seconds > 0 else 0.0


# -- the daemon's counters ---------------------------------------------------------------------
@dataclass
class Snapshot:
    at: float  # monotonic time the answer came back
    cameras: dict[str, dict[str, Any]]


def fetch_cameras(base_url: str, timeout: float = 30.0) -> Snapshot:
    r = httpx.get(f"{base_url}/api/cameras", timeout=timeout)
    r.raise_for_status()
    return Snapshot(time.monotonic(), r.json())


def wait_until(cond: Any, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something truthy or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- the baseline ------------------------------------------------------------------------------
_FRAME = re.compile(r"^frame=(\d+)$")


class LineReader:
    """A measured process whose stdout lines a thread hands to ``on_line``."""

    proc: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def on_line(self, line: str) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.on_line(line)

    def stop(self) -> None:
        """Terminate (then kill) the process and join the thread reading its output."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)


class FfmpegReader(LineReader):
    """``ffmpeg -i URL -f null -``: decode every frame of one RTSP stream and throw it away;
    ``-progress`` lines give its decoded frame count."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0

    def command(self) -> list[str]:
        return ["ffmpeg", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
                "-rtsp_transport", "tcp", "-i", self.url, "-an", "-f", "null", "-"]  # fmt: skip

    def on_line(self, line: str) -> None:
        m = _FRAME.match(line.strip())
        if m:
            self.frames = int(m.group(1))


@dataclass
class BaselineResult:
    cores: float
    rss_mib: float
    fps_per_stream: list[float]  # frames decoded per second in the window, per stream
    seconds: float


def measure_window(
    pids: list[int], frames: Any, warmup_s: float, seconds: float, what: str
) -> BaselineResult:
    """CPU of the ``pids`` trees over ``seconds`` after ``warmup_s``, once ``frames()`` (one count
    per stream) is above 0 for every stream; frames per second per stream over the window."""
    started = wait_until(lambda: all(n > 0 for n in frames()), timeout=30 + len(frames()))
    if not started:
        dead = sum(1 for n in frames() if n == 0)
        raise BenchError(f"{what}: {dead} of {len(frames())} streams never gave a frame")
    time.sleep(warmup_s)  # a measured warm-up, not synchronisation: all are running
    meter = TreeMeter([psutil.Process(p) for p in pids]).start()
    f0 = frames()
    time.sleep(seconds)
    f1 = frames()
    meter.stop()
    secs = meter.seconds
    return BaselineResult(
        cores=meter.cores,
        rss_mib=meter.peak_rss / 2**20,
        fps_per_stream=[(b - a) / secs for a, b in zip(f0, f1, strict=True)],
        seconds=secs,
    )


def run_baseline(urls: list[str], warmup_s: float, seconds: float) -> BaselineResult:
    """One ffmpeg per stream decoding every frame; CPU over ``seconds`` after ``warmup_s``."""
    readers = [FfmpegReader(u).start() for u in urls]
    try:
        pids = [r.proc.pid for r in readers if r.proc]
        return measure_window(
            pids, lambda: [r.frames for r in readers], warmup_s, seconds, "ffmpeg baseline"
        )
    finally:
        for r in readers:
            r.stop()


# -- the ingest alone: streamd's decode floor ------------------------------------------------
class IngestOnly(LineReader):
    """bench/ingest_only.py on some streams: streamd's own demux + sampled decode + BGR
    conversion with nothing analysing, its per-camera counters read from its stdout."""

    def __init__(self, urls: list[str], fps: float) -> None:
        self.urls = urls
        self.fps = fps
        self.latest: dict[str, list[int]] = {}

    def command(self) -> list[str]:
        script = Path(__file__).with_name("ingest_only.py")
        return [sys.executable, str(script), "--fps", str(self.fps), *self.urls]

    def on_line(self, line: str) -> None:
        with contextlib.suppress(json.JSONDecodeError):
            self.latest = json.loads(line)

    def sampled(self) -> list[int]:
        snap = self.latest
        return [snap[u][2] if u in snap else 0 for u in self.urls]


def run_ingest_only(urls: list[str], fps: float, warmup_s: float, seconds: float) -> BaselineResult:
    """CPU of streamd's ingest alone on the same streams over ``seconds`` after ``warmup_s``;
    ``fps_per_stream`` is frames sampled (handed on) per second."""
    reader = IngestOnly(urls, fps).start()
    try:
        assert reader.proc is not None
        return measure_window([reader.proc.pid], reader.sampled, warmup_s, seconds, "ingest only")
    finally:
        reader.stop()

"""Ingest building blocks and a camera against real sources (a file, a refused RTSP port)."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import clip_or_skip
from support.clips import left_object_clip
from support.daemon import free_port

from streamd.ingest.backoff import Backoff
from streamd.ingest.camera import Camera
from streamd.ingest.frame import Frame
from streamd.ingest.slot import LatestSlot
from streamd.ingest.source import SamplingClock, SourceSpec


async def test_latest_slot_keeps_only_the_newest_and_counts_drops() -> None:
    slot: LatestSlot[int] = LatestSlot(asyncio.get_running_loop())

    def produce() -> None:
        for i in range(1000):
            slot.put(i)

    t = threading.Thread(target=produce)
    t.start()
    t.join()
    assert await slot.get() == 999
    assert slot.put_count == 1000
    assert slot.dropped == 999
    assert slot.take_nowait() is None


def test_sampling_clock_keeps_the_rate_without_bursts() -> None:
    clock = SamplingClock(fps=1.0)
    kept = [t / 30 for t in range(30 * 20) if clock.want(t / 30)]
    assert 19 <= len(kept) <= 21
    gaps = np.diff(kept)
    assert gaps.min() > 0.9
    assert gaps.max() < 1.1
    # a 5 s hole (stall) is followed by one frame, not a catch-up burst
    clock2 = SamplingClock(fps=1.0)
    times = [0.0, 0.5, 1.0, 6.2, 6.25, 6.3, 7.2]
    assert [t for t in times if clock2.want(t)] == [0.0, 1.0, 6.2, 7.2]


def test_backoff_is_jittered_capped_and_resets() -> None:
    b = Backoff(base=0.5, factor=2.0, cap=8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    assert all(0 < d <= 8.0 for d in delays)
    assert max(delays[-4:]) > 2.0  # grew
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 0.5


async def test_file_camera_samples_at_fps_in_real_time(clips_dir: Path) -> None:
    clip = clip_or_skip(left_object_clip, clips_dir, bg="static")
    cam = Camera(SourceSpec(camera="f", file=clip, fps=2.0))
    frames: list[Frame] = []
    t0 = time.monotonic()
    async with asyncio.timeout(15):
        async for frame in cam.frames():
            frames.append(frame)
            if len(frames) == 8:
                break
    elapsed = time.monotonic() - t0
    assert 3.0 <= elapsed <= 6.0  # 8 frames at 2 fps of a real-time replay
    assert [f.seq for f in frames] == list(range(8))
    assert frames[0].image.shape == (480, 640, 3)
    pts = [f.pts for f in frames]
    assert all(p is not None for p in pts)
    assert 3.0 <= (frames[-1].pts or 0) - (frames[0].pts or 0) <= 4.0
    # this clip has a keyframe every 3-8 frames (x264 scene cuts on the noise): at 2 fps only
    # keyframes are decoded, the other frames are only demuxed
    assert cam.stats.decode_mode == "keyframes", cam.stats
    assert 8 <= cam.stats.decoded < cam.stats.demuxed / 3, cam.stats


async def test_unreachable_camera_retries_and_never_logs_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    url = f"rtsp://admin:hunter2@127.0.0.1:{port}/stream"
    cam = Camera(SourceSpec(camera="c", url=url, open_timeout_s=1, read_timeout_s=1))
    cam.backoff = Backoff(base=0.05, cap=0.2)
    caplog.set_level(logging.INFO)

    async def consume() -> None:
        async for _ in cam.frames():
            pytest.fail("no frame can come from a closed port")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2.5):
            await consume()
    assert cam.health.reconnects >= 2
    assert cam.stats.errors >= 2
    assert cam.health.online is False
    assert "hunter2" not in caplog.text
    assert "hunter2" not in cam.stats.last_error
    assert "reconnecting in" in caplog.text
    # the same fault, retried with growing intervals, is logged once (state changes only)
    faults = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "camera c:" in r.msg % r.args
    ]
    assert len(faults) == 1, [r.getMessage() for r in faults]
    assert cam.stats.errors >= 2

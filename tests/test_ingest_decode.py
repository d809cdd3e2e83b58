"""Decoding only what sampling needs: counts from the source's stats, over a real RTSP server.

Clips are 640x360 @ 25 fps x264 with a fixed GOP (-sc_threshold 0), made with the ffmpeg CLI.
The reader joins each RTSP stream at PLAY, so its first packets can come before any keyframe.
Every sampled frame is compared with the same frame from a decode of the whole file: decoding a
GOP only up to the due frame, or a keyframe alone, must give the very same pixels.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from support.rtsp import RtspServer, gst_rtsp_available

from streamd.ingest.camera import Camera
from streamd.ingest.frame import Frame
from streamd.ingest.sampled import SampledDecoder
from streamd.ingest.slot import LatestSlot
from streamd.ingest.source import SamplingClock, SourceSpec, SourceStats, read_session

FPS, SECONDS = 25, 10
# name -> (GOP in frames, B-frames)
CLIPS = {"g25": (25, 0), "g50": (50, 0), "g10": (10, 0), "g50b": (50, 3)}


def make_clip(directory: Path, gop: int, bframes: int, seconds: int = SECONDS) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not found on PATH (apt-get install ffmpeg)")
    out = directory / f"gop{gop}_bf{bframes}_{seconds}s.mp4"
    if not out.exists():
        cmd = [
            "ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"testsrc2=size=640x360:rate={FPS}", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-bf", str(bframes),
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
            "-pix_fmt", "yuv420p", "-threads", "1", "-movflags", "+faststart", str(out),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=60)
    return out


def reference_frames(clip: Path) -> dict[float, np.ndarray]:
    """Every frame of the clip, decoded in full, by presentation time (s, rounded to ms)."""
    with av.open(str(clip)) as c:
        return {
            round(float(f.time), 3): f.to_ndarray(format="bgr24")
            for f in c.decode(video=0)
            if f.time is not None
        }


@dataclass
class Run:
    stats: SourceStats
    frames: list[Frame]
    clip: Path


async def read_all(spec: SourceSpec, clip: Path) -> Run:
    """One whole read session; collects every sampled frame (1 fps: nothing is dropped)."""
    slot: LatestSlot[Frame] = LatestSlot(asyncio.get_running_loop())
    stats, stop, frames = SourceStats(), threading.Event(), []

    async def collect() -> None:
        while True:
            frames.append(await slot.get())

    collector = asyncio.create_task(collect())
    try:
        async with asyncio.timeout(SECONDS + 20):
            await asyncio.to_thread(read_session, spec, slot, stop, stats)
    finally:
        stop.set()
        collector.cancel()
    last = slot.take_nowait()
    if last is not None:
        frames.append(last)
    assert slot.dropped == 0
    return Run(stats, frames, clip)


@pytest.fixture(scope="module")
def rtsp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    directory = tmp_path_factory.mktemp("gops")
    clips = {name: make_clip(directory, gop, bf) for name, (gop, bf) in CLIPS.items()}

    async def main(srv: RtspServer) -> dict[str, Run]:
        specs = {n: SourceSpec(camera=n, url=srv.url(n), fps=1.0) for n in clips}
        runs = await asyncio.gather(*(read_all(specs[n], clips[n]) for n in clips))
        return dict(zip(clips, runs, strict=True))

    with RtspServer(files=clips) as srv:
        return asyncio.run(main(srv))


def assert_honest(run: Run) -> None:
    """Each sampled frame is the frame of its PTS in a full decode, pixel for pixel."""
    ref = reference_frames(run.clip)
    for f in run.frames:
        assert f.pts is not None
        expected = ref[round(f.pts, 3)]
        assert np.array_equal(f.image, expected), f"frame at {f.pts:.3f} s differs"


def gaps(frames: list[Frame]) -> list[float]:
    pts = [f.pts or 0.0 for f in frames]
    return [b - a for a, b in itertools.pairwise(pts)]


def test_one_second_gop_decodes_keyframes_only(rtsp_runs: dict[str, Run]) -> None:
    run = rtsp_runs["g25"]
    s = run.stats
    assert s.keyframe_interval_s == pytest.approx(1.0, abs=0.01)
    assert s.decode_mode == "keyframes"
    assert s.demuxed >= (SECONDS - 2) * FPS  # every packet of the stream went through demux
    assert s.sampled >= SECONDS - 2
    assert s.decoded == s.sampled  # one keyframe decoded per sample, nothing else
    assert all(g == pytest.approx(1.0, abs=0.01) for g in gaps(run.frames))
    assert_honest(run)


def test_two_second_gop_decodes_half_a_gop_per_sample(rtsp_runs: dict[str, Run]) -> None:
    run = rtsp_runs["g50"]
    s = run.stats
    assert s.keyframe_interval_s == pytest.approx(2.0, abs=0.01)
    assert s.decode_mode == "gop"
    assert s.sampled >= SECONDS - 3
    # Two samples per 2 s GOP: the keyframe, then 25 frames up to the one 1 s in; the second
    # half of every GOP is demuxed and never decoded.
    assert s.decoded <= 0.6 * s.demuxed
    assert all(0.9 <= g <= 1.1 for g in gaps(run.frames))
    assert_honest(run)


def test_short_gop_at_one_fps_decodes_keyframes_near_each_due_time(
    rtsp_runs: dict[str, Run],
) -> None:
    run = rtsp_runs["g10"]
    s = run.stats
    assert s.keyframe_interval_s == pytest.approx(0.4, abs=0.01)
    assert s.decode_mode == "keyframes"
    assert s.decoded <= s.sampled + 1 < s.demuxed / 10
    # keyframes are 0.4 s apart: the one nearest each due time, so 0.8-1.2 s apart, 1 fps on
    # average
    assert all(0.79 <= g <= 1.21 for g in gaps(run.frames))
    assert s.sampled >= SECONDS - 3
    assert_honest(run)


def test_b_frames_sample_the_due_frame_without_decoding_the_gop_tail(
    rtsp_runs: dict[str, Run],
) -> None:
    run = rtsp_runs["g50b"]
    s = run.stats
    assert s.keyframe_interval_s == pytest.approx(2.0, abs=0.01)
    assert s.decode_mode == "gop"
    assert s.sampled >= SECONDS - 3
    assert s.decoded <= 0.7 * s.demuxed
    assert all(0.75 <= g <= 1.25 for g in gaps(run.frames))
    assert_honest(run)


def test_file_source_keeps_real_time_and_decodes_keyframes(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, gop=25, bframes=0, seconds=4)

    async def main() -> Run:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        run = await read_all(SourceSpec(camera="f", file=clip, fps=1.0), clip)
        elapsed = loop.time() - t0
        # a 4 s file is replayed over about 4 s, not as fast as it can be read
        assert 3.5 <= elapsed <= 8.0
        return run

    run = asyncio.run(main())
    s = run.stats
    assert s.demuxed == 4 * FPS
    assert [f.pts for f in run.frames] == [0.0, 1.0, 2.0, 3.0]
    assert s.decoded == s.sampled == 4
    # received_at is when each sampled packet came out of the real-time replay: 1 s apart
    received = [f.received_at for f in run.frames]
    assert all(0.9 <= b - a <= 1.1 for a, b in itertools.pairwise(received))
    assert_honest(run)


@dataclass
class Replay:
    stats: SourceStats
    times: list[float]  # presentation time (s) of each sampled frame
    images: list[np.ndarray]
    modes: list[str]  # the decode mode when each sample came out
    keyframes: list[float]


def replay(clip: Path, fps: float, **kwargs: int) -> Replay:
    """Feed a file's packets to SampledDecoder as fast as it can go, each "received" at its
    decode time (DTS: the order a camera sends in), and decode the samples' pixels."""
    stats = SourceStats()
    out = Replay(stats, [], [], [], [])
    with av.open(str(clip)) as c:
        stream = c.streams.video[0]
        decoder = SampledDecoder(stream.codec_context, SamplingClock(fps), stats, **kwargs)
        for packet in c.demux(stream):
            if packet.size == 0 or packet.dts is None or packet.pts is None:
                continue
            if packet.is_keyframe:
                out.keyframes.append(round(float(packet.pts * packet.time_base), 3))
            samples = decoder.push(packet, 1000.0 + float(packet.dts * packet.time_base))
            for x in [*samples]:
                out.times.append(float(x.frame.time))
                out.images.append(x.frame.to_ndarray(format="bgr24"))
                out.modes.append(stats.decode_mode)
        for x in decoder.finish():
            out.times.append(float(x.frame.time))
            out.images.append(x.frame.to_ndarray(format="bgr24"))
            out.modes.append(stats.decode_mode)
    ref = reference_frames(clip)
    for t, im in zip(out.times, out.images, strict=True):
        assert np.array_equal(ref[round(t, 3)], im), f"frame at {t:.3f} s differs"
    return out


VARYING_KEYS = "0,0.6,1.2,3.2,3.8,4.4,5.0,7.0,7.6"


def varying_clip(directory: Path, bframes: int) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not found on PATH (apt-get install ffmpeg)")
    clip = directory / f"varying_bf{bframes}.mp4"
    cmd = [
        "ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi",
        "-i", f"testsrc2=size=320x180:rate={FPS}", "-t", "9",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", str(bframes), "-g", "250",
        "-sc_threshold", "0", "-force_key_frames", VARYING_KEYS, "-pix_fmt", "yuv420p",
        str(clip),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)
    return clip


def test_varying_gop_is_measured_and_decoded_by_gop(tmp_path: Path) -> None:
    """Keyframes at irregular times. Short GOPs first: keyframes only, until a 2 s GOP makes the
    awaited keyframe late and that sample is decoded from its GOP instead; from then on the
    longest recent GOP (2 s) keeps the GOP way. The median GOP is reported."""
    r = replay(varying_clip(tmp_path, bframes=0), fps=1.0)
    assert r.keyframes == [float(k) for k in VARYING_KEYS.split(",")]
    assert r.stats.keyframe_interval_s == pytest.approx(0.6, abs=0.01)  # the median GOP
    assert r.stats.decode_mode == "gop"  # 2 s GOPs among them: keyframes alone miss samples
    # 1.2: the keyframe nearest 1.0; 2.32: 2.0 plus the slack (half the 0.6 s GOP) while
    # waiting for a keyframe that came only at 3.2; then on the 1 s grid again
    assert r.times == pytest.approx([0.0, 1.2, 2.32, 3.2, 4.0, 5.0, 6.0, 7.0, 8.0], abs=0.01)
    assert r.modes[:3] == ["gop", "keyframes", "keyframes"]
    assert r.stats.decoded < r.stats.demuxed / 2


def test_varying_gop_with_b_frames_stays_honest(tmp_path: Path) -> None:
    """The same with B-frames: a keyframe decoded alone must be drained out of the reorder
    delay (and the decoder reset), and the fallback to the GOP way then starts again from the
    keyframe. Pixels match a full decode (checked in replay), times are real, none missing."""
    r = replay(varying_clip(tmp_path, bframes=3), fps=1.0)
    assert r.modes[1] == "keyframes"
    assert len(r.times) == 9
    assert all(0.7 <= b - a <= 1.4 for a, b in itertools.pairwise(r.times))
    assert r.stats.decoded < r.stats.demuxed / 2


def test_one_second_gop_with_b_frames_decodes_keyframes_only(tmp_path: Path) -> None:
    r = replay(make_clip(tmp_path, gop=25, bframes=3, seconds=6), fps=1.0)
    assert r.stats.decode_mode == "keyframes"
    assert r.times == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # The first sample comes before the GOP is known, the GOP way: its keyframe waits in the
    # reorder delay for the next packets (2 here). The others are keyframes decoded alone.
    assert r.stats.decoded <= len(r.times) + 3
    assert r.modes[1:] == ["keyframes"] * 5


def test_sampling_every_frame_of_a_b_frame_stream_keeps_them_all(tmp_path: Path) -> None:
    """At the stream's own rate every packet is due, several before the reorder delay lets
    the first out: each still gets its own frame, in order, with its own pixels."""
    r = replay(make_clip(tmp_path, gop=50, bframes=3, seconds=4), fps=FPS)
    assert r.stats.decoded == r.stats.demuxed == 4 * FPS
    assert r.times == pytest.approx([i / FPS for i in range(4 * FPS)], abs=1e-3)


def test_a_gop_too_long_to_hold_is_decoded_as_it_comes(tmp_path: Path) -> None:
    """One keyframe, then 10 s of inter frames: past `max_backlog` undecoded packets the older
    ones are decoded as they come, so memory stays bounded and samples keep coming."""
    clip = make_clip(tmp_path, gop=1000, bframes=0, seconds=10)
    r = replay(clip, fps=1.0, max_backlog=40)
    assert r.keyframes == [0.0]
    assert r.times == pytest.approx([float(t) for t in range(10)], abs=1e-3)
    assert r.stats.decoded == pytest.approx(r.stats.demuxed, abs=40)


async def _first_frames(camera: Camera, n: int, within_s: float) -> list[Frame]:
    frames: list[Frame] = []
    async with asyncio.timeout(within_s):
        async for frame in camera.frames():
            frames.append(frame)
            if len(frames) == n:
                break
    return frames


@pytest.mark.parametrize(
    ("gop_s", "fps"),
    [
        # Smart codecs stretch the GOP past 10 s: nothing decodes until the next keyframe
        # (the one a session starts with goes in probing), while packets keep coming.
        (6, 1.0),
        # One sample every 4 s: the packets in between are no stall, though no frame is due.
        (1, 0.25),
    ],
)
def test_a_camera_quieter_than_the_stall_timeout_is_not_stalled(
    tmp_path: Path, gop_s: int, fps: float
) -> None:
    """The stall timeout (2 s here) is for a camera that stopped sending, not one whose next
    keyframe or next sample is further off than that while its packets keep coming."""
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    clip = make_clip(tmp_path, gop=gop_s * FPS, bframes=0, seconds=16)
    with RtspServer(files={"cam": clip}) as srv:
        camera = Camera(SourceSpec(camera="cam", url=srv.url("cam"), fps=fps), stall_timeout_s=2)
        frames = asyncio.run(_first_frames(camera, 3, within_s=15))
    assert len(frames) == 3
    assert camera.health.stalls == 0
    assert camera.health.reconnects == 0

"""The RTSP test fixture works with a real reader opened exactly as the product opens cameras.

Measured on loopback (GStreamer 1.22, FFmpeg 5.1 / PyAV 18.1), see tests/support/rtsp_server.py:
a file clip's frame with presentation time t (``frame.time``, which equals the clip time) reaches
the reader at PLAY + t + ≈35 ms. The reader never decodes the first GOP (packets before the
second keyframe arrive without their IDR), so the first decoded frame of a GOP-30 clip is the
one at t=1.0 s, ≈1.04 s after PLAY. After the server is SIGKILLed the decode loop just ends
(no exception) within milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.clips import (
    BAG_BOX,
    ClipUnavailable,
    attended_object_clip,
    left_object_clip,
    static_clip,
)
from support.rtsp import RtspServer, ffmpeg_available, gst_rtsp_available

av = pytest.importorskip("av")

OPEN_OPTIONS = {
    "rtsp_transport": "tcp",
    "analyzeduration": "0",
    "probesize": "32768",
    "fflags": "nobuffer",
}
OPEN_TIMEOUT = (2.0, 2.0)


def open_stream(url: str) -> Any:
    """Open an RTSP URL the way streamd's ingest does."""
    return av.open(url, options=OPEN_OPTIONS, timeout=OPEN_TIMEOUT)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ok, why = ffmpeg_available()
    if not ok:
        pytest.skip(why)
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def left_clip(clip_dir: Path) -> Path:
    try:
        return left_object_clip(clip_dir)
    except ClipUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def rtsp_ok() -> None:
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)


def read_frames(
    url: str, seconds: float, max_frames: int = 300
) -> list[tuple[float, float | None, int, int]]:
    """Decode for about ``seconds`` (bounded in frames too): (arrival, frame.time, w, h)."""
    out: list[tuple[float, float | None, int, int]] = []
    with open_stream(url) as container:
        start = time.monotonic()
        for frame in container.decode(video=0):
            out.append((time.time(), frame.time, frame.width, frame.height))
            if len(out) >= max_frames or time.monotonic() - start >= seconds:
                break
    return out


class BackgroundReader:
    """Keeps decoding an already-open stream in a thread and records how it ended."""

    def __init__(self, frames: Iterator[Any], max_frames: int = 900) -> None:
        self.frames = frames
        self.max_frames = max_frames
        self.count = 0
        self.ended_at: float | None = None
        self.outcome: str | None = None  # "eof", "error: ...", or "cap"
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for _ in self.frames:
                self.count += 1
                if self.count >= self.max_frames:
                    self.outcome = "cap"
                    break
            else:
                self.outcome = "eof"
        except Exception as exc:  # the end of a live stream may also surface as an error
            self.outcome = f"error: {exc!r}"
        self.ended_at = time.time()

    def start(self) -> BackgroundReader:
        self.thread.start()
        return self


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("rtsp_ok")
def test_file_mount_plays_kill_and_restart(left_clip: Path) -> None:
    with RtspServer(files={"left": left_clip}) as srv:
        url = srv.url("left")
        assert url == f"rtsp://127.0.0.1:{srv.port}/left"

        # 1. A reader opened like the product's gets 640x480 frames in real time.
        before = time.time()
        frames = read_frames(url, seconds=2.0)
        assert frames, "no frame decoded"
        assert {(w, h) for _, _, w, h in frames} == {(640, 480)}
        plays = srv.wait_for_play("left", timeout=2.0)
        assert len(plays) == 1, srv.stderr_tail
        play = plays[0]
        first_arrival, first_time, _, _ = frames[0]
        assert before - 0.1 <= play <= first_arrival
        assert first_arrival - play < 3.0
        # PLAY is the clip's t=0 for this client: frame.time t arrives at ≈ PLAY + t.
        for arrival, t, _, _ in frames:
            assert t is not None
            assert -0.25 < arrival - (play + t) < 1.0, (arrival - play, t)
        assert first_time is not None
        assert first_time < 1.5  # the first decodable keyframe (GOP 30: t=1.0 s)

        # 2. Kill the server under a running reader: its stream ends (or raises), bounded.
        container = open_stream(url)
        try:
            decoded = container.decode(video=0)
            for _ in range(5):
                next(decoded)
            reader = BackgroundReader(decoded).start()
            time.sleep(0.3)
            killed_at = time.time()
            srv.kill()
            assert not srv.running
            reader.thread.join(timeout=10.0)
            assert not reader.thread.is_alive(), "reader still blocked 10 s after SIGKILL"
            assert reader.outcome in ("eof",) or str(reader.outcome).startswith("error"), (
                reader.outcome
            )
            assert reader.ended_at is not None
            assert reader.ended_at - killed_at < 5.0
        finally:
            container.close()

        # 3. While it is down a reopen fails fast.
        t0 = time.monotonic()
        with pytest.raises((ConnectionRefusedError, OSError, av.error.FFmpegError)):
            open_stream(url)
        assert time.monotonic() - t0 < 3.0

        # 4. Restart on the same port: reading works again and a new PLAY is reported.
        port = srv.port
        srv.restart()
        assert srv.port == port
        assert srv.url("left") == url
        frames = read_frames(url, seconds=1.5)
        assert frames
        assert {(w, h) for _, _, w, h in frames} == {(640, 480)}
        plays = srv.wait_for_play("left", count=3, timeout=2.0)
        assert len(plays) == 3  # first read, the killed reader, the read after restart
        assert frames[0][0] - plays[-1] < 3.0


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("rtsp_ok")
def test_live_mount_and_stop() -> None:
    srv = RtspServer(live=["cam"]).start()
    try:
        frames = read_frames(srv.url("/cam"), seconds=1.0)
        assert len(frames) >= 10
        assert {(w, h) for _, _, w, h in frames} == {(640, 480)}
        assert len(srv.wait_for_play("cam")) == 1
        assert srv.play_times("left") == []
    finally:
        srv.stop()
    assert not srv.running


def decode_at(path: Path, times: tuple[float, ...]) -> dict[float, Any]:
    """Grey frames (numpy) nearest to each time in ``times``; also checks the clip geometry."""
    want = sorted(times)
    got: dict[float, Any] = {}
    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (640, 480)
        assert stream.average_rate == 30
        for frame in container.decode(stream):
            n += 1
            for t in want:
                if t not in got and frame.time is not None and frame.time >= t - 1e-6:
                    got[t] = frame.to_ndarray(format="gray")
    assert n == 600  # 20 s at 30 fps
    return got


def box_mean(img: Any, x: int, y: int, w: int, h: int) -> float:
    return float(img[y : y + h, x : x + w].mean())


@pytest.mark.timeout(120)
def test_generated_clips_show_what_they_claim(clip_dir: Path) -> None:
    """Pixel checks on the static-background variants (plain grey floor, so boxes stand out)."""
    try:
        left = decode_at(left_object_clip(clip_dir, bg="static"), (3.0, 15.0))
    except ClipUnavailable as exc:
        pytest.skip(str(exc))
    attended = decode_at(attended_object_clip(clip_dir, bg="static"), (3.0, 8.0, 15.0))
    static = decode_at(static_clip(clip_dir), (3.0, 15.0))

    grey = 0x70
    person = (245, 300, 40, 130)  # x=245..285 lies inside the swaying person box (240..310)
    bx, by, bw, bh = BAG_BOX
    bag = (bx + 4, by + 4, bw - 8, bh - 8)
    for frames in (left, attended):
        assert abs(box_mean(frames[15.0], *bag) - grey) > 15  # the bag lies there
        assert abs(box_mean(frames[3.0], *bag) - grey) < 8  # ... not yet at t=3
    assert abs(box_mean(left[15.0], *person) - grey) < 8  # the person has gone
    for t in (8.0, 15.0):
        assert abs(box_mean(attended[t], *person) - grey) > 15  # the person stayed
    for t in (3.0, 15.0):
        img = static[t]
        assert abs(float(img.mean()) - grey) < 6
        assert float(img.std()) < 12

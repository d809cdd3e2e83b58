"""Ingest + perception costs, printed as a table.

    python bench/pipeline.py [--seconds 30]

Measures on this machine, in one run:
1. decode throughput of a 1280x720 H.264 clip with PyAV (every frame), the work a camera thread
   does, against `ffmpeg -f null` decoding the same file (baseline);
2. perception throughput (YOLOX-nano detector + world model) per sampled 720p frame, and the
   cost of a gated (unchanged) frame;
3. CPU % of a real `streamd run` with one 720p 30 fps RTSP camera analysed at 1 fps, against
   `ffmpeg` just decoding the same RTSP stream (baseline), both over the same wall time.
Needs ffmpeg, GStreamer's RTSP server (for 3) and ../shared/models/yolox_nano.onnx.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.daemon import MODEL, StreamdProcess, free_port  # noqa: E402
from support.rtsp import RtspServer, gst_rtsp_available  # noqa: E402

from streamd.ingest.frame import Frame  # noqa: E402
from streamd.perception.detector import YoloxDetector  # noqa: E402
from streamd.perception.model import Perception  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def make_clip(path: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size=1280x720:rate=30:duration={seconds}", "-c:v", "libx264", "-preset",
         "veryfast", "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def decode_fps(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with av.open(str(path)) as c:
        for _ in c.decode(c.streams.video[0]):
            n += 1
    return n / (time.perf_counter() - t0), n


def ffmpeg_decode_fps(path: Path, n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-threads", "1", "-i", str(path), "-f",
                    "null", "-"], check=True)  # fmt: skip
    return n / (time.perf_counter() - t0)


def sampled_frames(path: Path) -> list[Any]:
    with av.open(str(path)) as c:
        return [
            f.to_ndarray(format="bgr24")
            for i, f in enumerate(c.decode(c.streams.video[0]))
            if i % 30 == 0
        ]


def detector_ms(frames: list[Any], det: YoloxDetector) -> float:
    det.detect(frames[0])  # first call: ONNX Runtime's lazy set-up for this input shape
    t0 = time.perf_counter()
    for img in frames:
        det.detect(img)
    return (time.perf_counter() - t0) / len(frames) * 1000


def perception_rate(path: Path) -> tuple[float, float, float]:
    frames = sampled_frames(path)
    det = YoloxDetector(MODEL)
    full_model = Perception(det, diff_threshold=-1.0)  # never gate: every frame analysed
    t0 = time.perf_counter()
    for i, img in enumerate(frames):
        full_model.observe(Frame("b", img, float(i), float(i), i))
    full = len(frames) / (time.perf_counter() - t0)
    assert full_model.stats.gated == 0
    gated = Perception(det, diff_threshold=1.1)  # always gated after the first
    gated.observe(Frame("b", frames[0], 0.0, 0.0, 0))
    t0 = time.perf_counter()
    for i in range(1, len(frames)):
        gated.observe(Frame("b", frames[0], float(i), float(i), i))
    gated_ms = (time.perf_counter() - t0) / (len(frames) - 1) * 1000
    assert gated.stats.gated == len(frames) - 1
    return full, 1000 / full, gated_ms


def pose_row() -> tuple[str, str, str]:
    """MediaPipe pose on one real person box: someone lying with the head towards the camera
    (UP-Fall a11, side camera), the case it is asked about."""
    name = "pose (MediaPipe), one person box, 640x480 footage"
    clip = REPO.parent / "shared" / "media" / "upfall" / "a11_trial2_cam2.mp4"
    if importlib.util.find_spec("mediapipe") is None:
        return (name, "skipped", "mediapipe not installed (scripts/install-pose)")
    if not clip.is_file():
        return (name, "skipped", f"footage missing: {clip}")
    from streamd.perception.pose import MediapipePose

    with av.open(str(clip)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    det = YoloxDetector(MODEL)
    people = [d for d in det.detect(image) if d.label == "person" and d.box.y1 > 200]
    if not people:
        return (name, "skipped", "the detector found no person box on the mattress")
    box = max(people, key=lambda d: d.box.area).box
    pose = MediapipePose()
    pose.lying(image, box)  # first call: the graph's set-up
    pose.calls, pose.busy_s = 0, 0.0
    answers = {pose.lying(image, box) for _ in range(20)}
    ms = 1000 * pose.busy_s / pose.calls
    return (name, f"{ms:.1f} ms", f"asked only for squat (LOW) person boxes; lying: {answers}")


def daemon_cpu(clip: Path, seconds: float) -> tuple[float, float, int]:
    with RtspServer(files={"cam": clip}) as server, tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "data_dir": f"{tmp}/data",
            "database": {"url": f"sqlite+aiosqlite:///{tmp}/e.db"},
            "api": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
            "model": {"detector": {"path": str(MODEL)}},
            "cameras": {"cam": {"url": server.url("cam"), "fps": 1}},
            "rules": [{"name": "people", "text": "a person is present"}],
        }
        proc = StreamdProcess(cfg, Path(tmp)).start()
        assert proc.proc is not None
        server.wait_for_play("cam", timeout=30)
        time.sleep(3)  # past start-up (imports, model load)
        c0, t0 = cpu_seconds(proc.proc.pid), time.monotonic()
        base = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", server.url("cam"),
             "-f", "null", "-"],
        )  # fmt: skip
        b0 = cpu_seconds(base.pid)
        time.sleep(seconds)
        ours = (cpu_seconds(proc.proc.pid) - c0) / (time.monotonic() - t0) * 100
        theirs = (cpu_seconds(base.pid) - b0) / (time.monotonic() - t0) * 100
        base.terminate()
        base.wait()
        import httpx

        cams = httpx.get(f"http://{cfg['api']['listen']}/api/cameras", timeout=5).json()  # type: ignore[index]
        proc.terminate()
        return ours, theirs, int(cams["cam"]["analysed_frames"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "720p.mp4"
        make_clip(clip, int(args.seconds) + 20)
        fps, n = decode_fps(clip)
        base = ffmpeg_decode_fps(clip, n)
        rows.append(("decode 720p H.264, PyAV (frames/s)", f"{fps:.0f}",
                     f"ffmpeg -threads 1: {base:.0f} ({fps / base:.2f}x)"))  # fmt: skip
        rate, ms, gated_ms = perception_rate(clip)
        rows.append(("perceive 720p frame: detector + world model (frames/s)", f"{rate:.1f}",
                     f"{ms:.1f} ms/frame"))  # fmt: skip
        rows.append(
            ("gated (unchanged) frame", f"{gated_ms:.2f} ms", f"{ms / gated_ms:.0f}x cheaper")
        )
        frames = sampled_frames(clip)
        wide = YoloxDetector(MODEL)
        square = YoloxDetector(MODEL, rectangular=False)
        wide_ms, square_ms = detector_ms(frames, wide), detector_ms(frames, square)
        h, w = frames[0].shape[:2]
        rows.append(
            (f"detector alone, 720p frame at {'x'.join(map(str, wide.input_shape(h, w)[::-1]))}",
             f"{wide_ms:.1f} ms", f"square 416x416 letterbox: {square_ms:.1f} ms "
             f"({wide_ms / square_ms:.2f}x)")
        )  # fmt: skip
        rows.append(pose_row())
        ok, why = gst_rtsp_available()
        if ok:
            ours, theirs, analysed = daemon_cpu(clip, args.seconds)
            rows.append(("CPU % (of one core), 1 camera 720p30 RTSP at 1 fps", f"{ours:.1f} %",
                         f"ffmpeg decode-only: {theirs:.1f} % ({ours / theirs:.2f}x)"))  # fmt: skip
            rows.append(
                ("frames analysed by the daemon", str(analysed), f"over {args.seconds + 3:.0f} s")
            )
        else:
            rows.append(("CPU % daemon", "skipped", why))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':{w}}  {'value':>10}  baseline / note")
    for name, value, note in rows:
        print(f"{name:{w}}  {value:>10}  {note}")


if __name__ == "__main__":
    main()

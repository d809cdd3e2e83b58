"""How streamd scales with the number of cameras, against ffmpeg decoding every frame.

N simulated 720p25 cameras (a real clip from ../shared/media re-encoded once to 1280x720 25 fps
H.264 without B-frames, a keyframe every GOP seconds, cached) are served by one local GStreamer
RTSP server, each camera its own mount and its own pipeline. For each N the real daemon
(`python -m streamd run`) analyses all of them at the target fps with one rule; after a warm-up
its CPU (cores, process tree), RSS and per-camera counters from GET /api/cameras are measured
over a window. Then, in the same run and over a window of the same length, one
`ffmpeg -f null -` per stream decodes every frame of the same N streams: the baseline. The two
are measured one after the other, not side by side, so that they do not fight over the cores.
Third (unless --no-floor), streamd's ingest alone on the same streams (bench/ingest_only.py:
the daemon's own demux, keyframe/GOP decode and BGR conversion, nothing analysed): the floor
under any analysis, as cores and as a ratio to the same baseline.

    python bench/scale.py [--n 1,8,16,32,64] [--gop 1,2] [--seconds 30] [--json]

Fields the daemon does not report (yet) print as "—" (null in JSON). Columns: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_support import (  # noqa: E402
    DEFAULT_CACHE,
    BenchError,
    Snapshot,
    TreeMeter,
    clip_seconds,
    fetch_cameras,
    prepare_clip,
    run_baseline,
    run_ingest_only,
    wait_until,
)
from support.daemon import MODEL, StreamdProcess, free_port  # noqa: E402
from support.rtsp import RtspServer, gst_rtsp_available  # noqa: E402

RULE = {"name": "person", "text": "a person is present"}
_T0 = time.monotonic()


def say(msg: str) -> None:
    """Progress on stderr (stdout carries only the table or the JSON)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"want integers >= 1, got {text!r}")
    return values


def _delta(s0: Snapshot, s1: Snapshot, cam: str, key: str) -> float | None:
    a, b = s0.cameras.get(cam, {}).get(key), s1.cameras.get(cam, {}).get(key)
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    return float(b - a)


def _values(snap: Snapshot, key: str) -> list[float]:
    return [float(c[key]) for c in snap.cameras.values() if isinstance(c.get(key), int | float)]


def camera_stats(s0: Snapshot, s1: Snapshot, target_fps: float) -> dict[str, Any]:
    """Per-camera rates over the window between two /api/cameras answers, summarised."""
    secs = s1.at - s0.at
    cams = sorted(s1.cameras)

    def per_camera(*keys: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in cams:
            deltas = [d for key in keys if (d := _delta(s0, s1, c, key)) is not None]
            if len(deltas) == len(keys):
                out[c] = sum(deltas) / secs
        return out

    def rates(key: str) -> list[float]:
        return list(per_camera(key).values())

    def total(key: str) -> int | None:
        out = [_delta(s0, s1, c, key) for c in cams]
        known = [d for d in out if d is not None]
        return int(sum(known)) if known else None

    analysed = rates("analysed_frames")
    # A sample the gate found unchanged is evaluated all the same (world model, rules) on the
    # last detections: it counts towards the camera's rate, not towards the detector's.
    evaluated = list(per_camera("analysed_frames", "gated_frames").values())
    decoded = rates("decoded_frames")
    p50, p95 = _values(s1, "latency_p50_s"), _values(s1, "latency_p95_s")
    effective, keyframe = _values(s1, "effective_fps"), _values(s1, "keyframe_interval_s")
    targets = _values(s1, "target_fps")
    return {
        "cameras": len(cams),
        "window_s": secs,
        "target_fps": statistics.mean(targets) if targets else target_fps,
        "analysed_fps_min": min(analysed) if analysed else None,
        "analysed_fps_mean": statistics.mean(analysed) if analysed else None,
        "analysed_fps_per_camera": per_camera("analysed_frames"),
        "evaluated_fps_min": min(evaluated) if evaluated else None,
        "evaluated_fps_mean": statistics.mean(evaluated) if evaluated else None,
        "decoded_fps_mean": statistics.mean(decoded) if decoded else None,
        # the typical camera's median, the worst camera's 95th percentile
        "latency_p50_s": statistics.median(p50) if p50 else None,
        "latency_p95_s": max(p95) if p95 else None,
        "effective_fps_min": min(effective) if effective else None,
        "keyframe_interval_s": statistics.median(keyframe) if keyframe else None,
        "dropped": total("dropped_frames"),
        "skipped_backpressure": total("skipped_backpressure"),
        "reconnects": total("reconnects"),
    }


def measure_streamd(
    server: RtspServer, mounts: list[str], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    cfg = {
        "data_dir": str(work / "data"),
        "database": {"url": f"sqlite+aiosqlite:///{work / 'events.db'}"},
        "api": {"enabled": True, "listen": f"127.0.0.1:{port}"},
        # the token window's encoders are a separate cost; this measures ingest + detector + rules
        "window": {"enabled": False},
        "model": {"detector": {"path": str(MODEL)}},
        "cameras": {
            # diff_threshold 0 (the default here): every sampled frame goes through the detector,
            # the worst case; a camera's own default skips unchanged frames, and then the load
            # depends on the footage
            m: {"url": server.url(m), "fps": args.fps, "diff_threshold": args.diff_threshold}
            for m in mounts
        },
        "rules": [RULE],
    }
    daemon = StreamdProcess(cfg, work).start()
    assert daemon.proc is not None
    try:

        def answer() -> Snapshot | None:
            if daemon.proc is not None and daemon.proc.poll() is not None:
                tail = daemon.log()[-2000:]
                raise BenchError(f"streamd exited ({daemon.proc.returncode}):\n{tail}")
            try:
                return fetch_cameras(base_url, timeout=10)
            except httpx.HTTPError:  # not listening yet, or too busy to answer in time
                return None

        def all_analysing() -> Snapshot | None:
            snap = answer()
            if snap is None or len(snap.cameras) != len(mounts):
                return None
            ok = all(c.get("analysed_frames", 0) > 0 for c in snap.cameras.values())
            return snap if ok else None

        # start-up (imports, model load) is not part of the clip's time: cameras connect after
        if wait_until(answer, timeout=args.start_timeout) is None:
            raise BenchError(
                f"streamd API not up in {args.start_timeout:.0f} s:\n{daemon.log()[-2000:]}"
            )
        say(f"streamd up with {len(mounts)} cameras; waiting for each one's first analysis")
        ready = wait_until(all_analysing, timeout=args.ready_timeout + len(mounts))
        started = ready is not None
        say("every camera analysing" if started else "not every camera analysing; measuring")
        time.sleep(args.warmup)  # the measured warm-up: every camera is already running
        meter = TreeMeter([psutil.Process(daemon.proc.pid)]).start()
        s0 = fetch_cameras(base_url, timeout=60)
        time.sleep(args.seconds)
        s1 = fetch_cameras(base_url, timeout=60)
        meter.stop()
        say("streamd window done")
    finally:
        daemon.terminate(timeout=20)
    out = camera_stats(s0, s1, args.fps)
    out.update(
        cores=meter.cores,
        rss_mib=meter.peak_rss / 2**20,
        all_started=started,
        cpu_window_s=meter.seconds,
    )
    return out


def measure_point(n: int, gop: int, clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    mounts = [f"cam{i}" for i in range(n)]
    with (
        RtspServer(files=dict.fromkeys(mounts, clip), ready_timeout=30) as server,
        tempfile.TemporaryDirectory(prefix="streamd-scale-") as tmp,
    ):
        ours = measure_streamd(server, mounts, args, Path(tmp))
        say("ffmpeg baseline")
        urls = [server.url(m) for m in mounts]
        base = run_baseline(urls, args.warmup, args.seconds)
        floor = None
        if not args.no_floor:
            say("streamd's ingest alone (the floor)")
            floor = run_ingest_only(urls, args.fps, args.warmup, args.seconds)
    return {
        "n": n,
        "gop_s": gop,
        "streamd": ours,
        "baseline": {
            "cores": base.cores,
            "rss_mib": base.rss_mib,
            "decoded_fps_min": min(base.fps_per_stream),
            "decoded_fps_mean": statistics.mean(base.fps_per_stream),
            "window_s": base.seconds,
        },
        "ratio": ours["cores"] / base.cores if base.cores > 0 else None,
        "ingest_only": None
        if floor is None
        else {
            "cores": floor.cores,
            "sampled_fps_min": min(floor.fps_per_stream),
            "ratio": floor.cores / base.cores if base.cores > 0 else None,
        },
    }


# -- output ------------------------------------------------------------------------------------
COLUMNS = (
    ("N", 3), ("GOP", 4), ("streamd cores", 13), ("RSS MiB", 8), ("ffmpeg cores", 12),
    ("ratio", 6), ("ingest cores", 12), ("ingest ratio", 12),
    ("fps min", 7), ("fps mean", 8), ("det/s", 5), ("target", 6), ("eff min", 7),
    ("decoded/s", 9), ("p50 s", 6), ("p95 s", 6), ("dropped", 7), ("skipped", 7), ("kf s", 5),
)  # fmt: skip


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(points: list[dict[str, Any]]) -> str:
    lines = ["  ".join(f"{name:>{w}}" for name, w in COLUMNS)]
    for p in points:
        if "error" in p:
            lines.append(f"{p['n']:>3}  {p['gop_s']:>3}s  failed: {p['error'].splitlines()[0]}")
            continue
        s, b, f = p["streamd"], p["baseline"], p.get("ingest_only") or {}
        cells = (
            p["n"], f"{p['gop_s']}s", _fmt(s["cores"]), _fmt(s["rss_mib"], 0), _fmt(b["cores"]),
            _fmt(p["ratio"]), _fmt(f.get("cores")), _fmt(f.get("ratio")),
            _fmt(s["evaluated_fps_min"]), _fmt(s["evaluated_fps_mean"]),
            _fmt(s["analysed_fps_mean"]),
            _fmt(s["target_fps"]), _fmt(s["effective_fps_min"]), _fmt(s["decoded_fps_mean"], 1),
            _fmt(s["latency_p50_s"]), _fmt(s["latency_p95_s"]), _fmt(s["dropped"]),
            _fmt(s["skipped_backpressure"]), _fmt(s["keyframe_interval_s"], 1),
        )  # fmt: skip
        lines.append("  ".join(f"{c!s:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=_ints, default=[1, 8, 16, 32, 64], help="camera counts (1,8,...)")
    ap.add_argument("--gop", type=_ints, default=[1, 2], help="keyframe intervals in s (1,2)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measurement window (s)")
    ap.add_argument(
        "--warmup",
        type=float,
        default=15.0,
        help="after all cameras analyse (s); the daemon loads its rule-word model in the "
        "background after start, which is start-up cost, not steady state",
    )
    ap.add_argument(
        "--diff-threshold",
        type=float,
        default=0.0,
        help="cameras' diff_threshold (0: detector on every sample, the worst case; the camera "
        "default 0.004 skips unchanged frames)",
    )
    ap.add_argument("--fps", type=float, default=1.0, help="target analysed fps per camera")
    ap.add_argument(
        "--ready-timeout", type=float, default=30.0,
        help="how long (s, plus 1 s a camera) to wait for every camera's first analysed frame; "
        "past it the window is measured anyway (collapse is a result, not an error)",
    )  # fmt: skip
    ap.add_argument(
        "--start-timeout", type=float, default=180.0, help="for the daemon's API to answer (s)"
    )
    ap.add_argument(
        "--no-floor", action="store_true",
        help="skip the third measurement: streamd's ingest alone (bench/ingest_only.py: demux, "
        "sampled decode, BGR; nothing analysed), the least this design can cost",
    )  # fmt: skip
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="encoded clips")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    if (
        args.seconds <= 0
        or args.warmup < 0
        or args.fps <= 0
        or min(args.ready_timeout, args.start_timeout) <= 0
    ):
        ap.error("--seconds, --fps and the timeouts must be > 0, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok, why = gst_rtsp_available()
    if not ok:
        print(f"scale bench needs the GStreamer RTSP server: {why}", file=sys.stderr)
        return 2
    if not MODEL.is_file():
        print(f"scale bench needs the detector model {MODEL}", file=sys.stderr)
        return 2
    # every client's stream must outlast start-up, warm-up, the window and the baseline's own
    needed = args.ready_timeout + max(args.n) + args.warmup + args.seconds + 15
    points: list[dict[str, Any]] = []
    try:
        for gop in args.gop:
            say(f"preparing the {gop} s keyframe clip")
            clip = prepare_clip(gop, clip_seconds(needed), args.cache_dir)
            for n in args.n:
                say(f"N={n} GOP={gop}s")
                try:
                    points.append(measure_point(n, gop, clip, args))
                except (BenchError, httpx.HTTPError) as exc:
                    # one N that breaks (say the API stops answering) does not cost the others
                    say(f"N={n} GOP={gop}s failed: {exc}")
                    points.append({"n": n, "gop_s": gop, "error": str(exc)})
    except BenchError as exc:
        print(f"scale bench: {exc}", file=sys.stderr)
        return 1
    info = {
        "clip": "720p25 H.264, no B-frames, from intel_one-by-one-person-detection.mp4",
        "rule": RULE["text"],
        "cpu_count": psutil.cpu_count(),
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "diff_threshold": args.diff_threshold,
        "points": points,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(table(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())

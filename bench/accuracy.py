"""Accuracy of the world model + rules on hand-labelled real footage.

Each clip in ../shared/media with a label file in bench/labels/ is decoded with PyAV, sampled
at the camera rate (default 1 fps, as a camera is configured by default), prefixed with a few
seconds of its first frame (a live camera's background model has seen the scene before anything
happens), and fed through the real `Perception` and `RulesEngine` that the daemon runs. Every
rule kind runs on every clip, so each clip is a positive for what its labels say happens in it
and a negative for the rest. Printed per rule kind: expected events, hits, false alerts,
misses, precision, recall, median and worst onset error, and false alerts per hour of negative
footage.

    python bench/accuracy.py [--fps 1] [--phases 0,0.25,0.5,0.75] [--only upfall] [--verbose]
                             [--rtsp]

`--rtsp` also runs a subset through the real daemon, each clip a camera served by a local
GStreamer RTSP server in real time (with the same lead-in of its first frame, re-encoded once
with ffmpeg; `--rtsp-lead-in 0` serves the bare clip), and scores the events `streamd events`
logged, against the same labels.

A label file (see bench/labels/README.md) holds what happens when, in seconds of the clip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamd.config import RuleConfig  # noqa: E402
from streamd.events.change import EventChange  # noqa: E402
from streamd.ingest.frame import Frame  # noqa: E402
from streamd.perception.detector import YoloxDetector  # noqa: E402
from streamd.perception.model import Perception  # noqa: E402
from streamd.perception.pose import MediapipePose, PoseEstimator, load_pose  # noqa: E402
from streamd.perception.world import EventKind  # noqa: E402
from streamd.rules.compiler import compile_rule  # noqa: E402
from streamd.rules.engine import RuleRunner, RulesEngine  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
MODEL = ROOT.parent / "shared" / "models" / "yolox_nano.onnx"
LABELS = Path(__file__).resolve().parent / "labels"
T0 = 1_700_000_000.0  # clip time 0 as a wall-clock epoch

# rule kind → (rule text, onset tolerance in seconds)
RULES: dict[str, tuple[str, float]] = {
    "fall": ("someone falls down", 2.0),
    "lying": ("a person is lying on the floor for 5 seconds", 3.0),
    "left": ("alert when a bag is left unattended for 5 seconds", 3.0),
}


@dataclass
class Expected:
    onset: float  # clip seconds
    until: float | None = None  # a state's end (None: to the clip's end)


@dataclass
class ClipLabels:
    clip: str
    duration: float
    expected: dict[str, list[Expected]]
    removed: list[float]
    pad_s: float


def load_labels(path: Path) -> ClipLabels:
    doc = yaml.safe_load(path.read_text())
    facts: dict[str, Any] = doc.get("facts") or {}
    expected: dict[str, list[Expected]] = {k: [] for k in RULES}
    for fall in facts.get("falls") or []:
        expected["fall"].append(Expected(float(fall["start"])))
    lying_s = 5.0
    for spell in facts.get("lying") or []:
        start, end = float(spell["start"]), spell.get("end")
        end_s = float(doc["duration_s"]) if end is None else float(end)
        if end_s - start >= lying_s:
            expected["lying"].append(Expected(start, None if end is None else float(end)))
    for obj in facts.get("objects_left") or []:
        expected["left"].append(Expected(float(obj["owner_away"])))
    removed = [float(r["time"]) for r in facts.get("objects_removed") or []]
    return ClipLabels(doc["clip"], float(doc["duration_s"]), expected, removed, pad_s=5.0)


@dataclass
class ClipResult:
    labels: ClipLabels
    fired: dict[str, list[EventChange]] = field(default_factory=dict)
    removed_events: list[float] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


def run_clip(
    labels: ClipLabels,
    detector: YoloxDetector,
    fps: float,
    phase: float = 0.0,
    pose: PoseEstimator | None = None,
) -> ClipResult:
    """One clip through the world model and rules, sampled at `fps` starting `phase` of a
    sampling period into the clip (a live camera's samples fall anywhere between frames)."""
    perception = Perception(detector, pose=pose)
    runners = {
        kind: RuleRunner("bench", RuleConfig(name=kind, text=text), compile_rule(text))
        for kind, (text, _) in RULES.items()
    }
    engine = RulesEngine("bench", list(runners.values()), segment_s=2.0)
    result = ClipResult(labels, {k: [] for k in RULES})
    started = time.perf_counter()

    def feed(image: Any, t: float) -> None:
        result.frames += 1
        world = perception.observe(Frame("bench", image, T0 + t, t, result.frames))
        for ev in world.events:
            if ev.kind is EventKind.REMOVED:
                result.removed_events.append(ev.ts - T0)
        for change in engine.feed(world):
            if change.kind == "new":
                result.fired[change.rule_name].append(change)

    with av.open(str(MEDIA / labels.clip)) as container:
        stream = container.streams.video[0]
        next_t, first = phase / fps, True
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            image = frame.to_ndarray(format="bgr24")
            if first:
                n = round(labels.pad_s * fps)
                for i in range(n):
                    feed(image, -labels.pad_s + i / fps)
                first = False
            feed(image, t)
    for change in engine.flush():
        if change.kind == "new":
            result.fired[change.rule_name].append(change)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class Score:
    expected: int = 0
    hits: int = 0
    false: int = 0
    errors: list[float] = field(default_factory=list)
    negative_s: float = 0.0
    negative_false: int = 0


def score(results: list[ClipResult]) -> dict[str, Score]:
    scores = {k: Score() for k in RULES}
    for res in results:
        for kind, (_, tol) in RULES.items():
            sc = scores[kind]
            want = res.labels.expected[kind]
            fired = sorted(c.start_time - T0 for c in res.fired[kind])
            sc.expected += len(want)
            if not want:
                sc.negative_s += res.labels.duration
                sc.negative_false += len(fired)
            unused = list(fired)
            for exp in want:
                match = min(unused, key=lambda f: abs(f - exp.onset), default=None)
                if match is not None and abs(match - exp.onset) <= tol:
                    unused.remove(match)
                    sc.hits += 1
                    sc.errors.append(match - exp.onset)
                elif exp.onset <= 0.0:
                    # Already so when the clip starts (the camera came on to it): an alert
                    # any time during the state is right, and it has no onset to time.
                    end = res.labels.duration if exp.until is None else exp.until
                    during = [f for f in unused if exp.onset <= f <= end]
                    if during:
                        unused.remove(during[0])
                        sc.hits += 1
            sc.false += len(unused)
    return scores


def group(clip: str) -> str:
    """UP-Fall activities by kind (the issue's targets are per group), else the folder."""
    name = Path(clip).name
    if clip.startswith("upfall/"):
        activity = int(name[1:3])
        if activity <= 5:
            return "UP-Fall falls (a01-a05)"
        if activity <= 10:
            return "UP-Fall non-falls (a06-a10)"
        return "UP-Fall lying down (a11)"
    return clip.split("/", maxsplit=1)[0] if "/" in clip else "other clips"


def print_groups(results: list[ClipResult]) -> None:
    groups: dict[str, list[ClipResult]] = {}
    for r in results:
        groups.setdefault(group(r.labels.clip), []).append(r)
    print(f"\n{'clips':<28} {'n':>3} " + " ".join(f"{k + ' hit/exp/false':>20}" for k in RULES))
    for name, rs in sorted(groups.items()):
        sc = score(rs)
        cells = " ".join(f"{f'{v.hits}/{v.expected}/{v.false}':>20}" for v in sc.values())
        print(f"{name:<28} {len(rs):>3} {cells}")


def print_table(scores: dict[str, Score]) -> None:
    print(
        f"{'rule kind':<10} {'expected':>8} {'hits':>5} {'false':>6} {'missed':>7} "
        f"{'precision':>9} {'recall':>7} {'median err s':>12} {'worst err s':>11} "
        f"{'false/h neg':>11} {'neg min':>7}"
    )
    for kind, sc in scores.items():
        fired = sc.hits + sc.false
        prec = f"{sc.hits / fired:.2f}" if fired else "-"
        rec = f"{sc.hits / sc.expected:.2f}" if sc.expected else "-"
        med = f"{statistics.median(sc.errors):+.1f}" if sc.errors else "-"
        worst = f"{max(sc.errors, key=abs):+.1f}" if sc.errors else "-"
        per_h = f"{sc.negative_false / (sc.negative_s / 3600):.0f}" if sc.negative_s else "-"
        print(
            f"{kind:<10} {sc.expected:>8} {sc.hits:>5} {sc.false:>6} "
            f"{sc.expected - sc.hits:>7} {prec:>9} {rec:>7} {med:>12} {worst:>11} "
            f"{per_h:>11} {sc.negative_s / 60:>7.1f}"
        )


RTSP_SUBSET = (
    "abandoned/aboda_video1_corridor_backpack.mp4",
    "abandoned/pets2006_concourse_backpack.mp4",
    "falls/room_chair_fall_lowres.mp4",
    "falls/overhead_room_fall_then_sits_up.mp4",
    "upfall/a06_trial2_cam1.mp4",
    "upfall/a11_trial2_cam2.mp4",  # lying head towards the camera: the pose model's case
)


@dataclass
class _Logged:
    """An event as `streamd events --json` reports it, in the scorer's clock."""

    start_time: float


LEAD_IN_S = 5.0  # seconds of a clip's first frame before it, as the file runs get


def with_lead_in(clip: Path, lead_in_s: float, work: Path) -> Path:
    """The clip with its first frame held for `lead_in_s` first (H.264 without B-frames, as
    the RTSP server's file mount needs): a live camera's background model has seen the scene
    long before anything happens, and the short test clips start right at the action."""
    import subprocess

    out = work / f"{clip.stem}-lead{lead_in_s:g}.mp4"
    cmd = [
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(clip),
        "-vf", f"tpad=start_duration={lead_in_s:g}:start_mode=clone",
        "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-bf", "0",
        # A keyframe every 2 s, as cameras send (x264's default, 250 frames, is 8-14 s here)
        "-force_key_frames", "expr:gte(t,n_forced*2)",
        "-pix_fmt", "yuv420p", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=300)
    return out


def run_rtsp(
    labels: list[ClipLabels], fps: float, lead_in_s: float, pose: str = "auto"
) -> list[ClipResult]:
    """The subset through a real `streamd run`: one RTSP camera per clip, played from frame 0
    of the clip with its lead-in (the same scene history the file runs get), every rule on
    every camera."""
    import json

    sys.path.insert(0, str(ROOT / "tests"))
    from support.daemon import StreamdProcess, free_port
    from support.rtsp import RtspServer, gst_rtsp_available

    ok, why = gst_rtsp_available()
    if not ok:
        print(f"--rtsp skipped: {why}", file=sys.stderr)
        return []
    if not labels:
        return []
    mounts = {f"c{i}": lab for i, lab in enumerate(labels)}
    work = Path(tempfile.mkdtemp(prefix="streamd-accuracy-"))
    files = {
        m: with_lead_in(MEDIA / lab.clip, lead_in_s, work) if lead_in_s > 0 else MEDIA / lab.clip
        for m, lab in mounts.items()
    }
    with RtspServer(files=files) as server:
        cfg = {
            "data_dir": str(work / "data"),
            "database": {"url": f"sqlite+aiosqlite:///{work / 'events.db'}"},
            "api": {"enabled": False, "listen": f"127.0.0.1:{free_port()}"},
            "window": {"enabled": False},
            "model": {"detector": {"path": str(MODEL)}, "pose": pose},
            "cameras": {m: {"url": server.url(m), "fps": fps} for m in mounts},
            "rules": [{"name": k, "text": text} for k, (text, _) in RULES.items()],
        }
        proc = StreamdProcess(cfg, work).start()
        try:
            plays = {m: server.wait_for_play(m, timeout=90)[:1] for m in mounts}
            longest = max(lab.duration for lab in mounts.values()) + lead_in_s
            time.sleep(longest + 8.0)  # the clips play in real time, then the last segment
        finally:
            proc.terminate()
        out = proc.cli("events", "-c", str(proc.config_path), "--json", "--limit", "1000")
    rows = json.loads(out.stdout) if out.returncode == 0 else []
    results = []
    for m, lab in mounts.items():
        res = ClipResult(lab, {k: [] for k in RULES})
        play = plays[m][0] if plays[m] else None
        for row in rows:
            if row["camera"] == m and play is not None and row["rule"] in res.fired:
                clip_t = row["start_time"] - play - lead_in_s
                if clip_t > lab.duration + 2.0:
                    continue  # the clip ended and the camera reconnected: a replay, not scored
                res.fired[row["rule"]].append(_Logged(T0 + clip_t))  # type: ignore[arg-type]
        results.append(res)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=float, default=1.0, help="sampling rate (camera default 1)")
    ap.add_argument("--only", default="", help="only label files whose name contains this")
    ap.add_argument("--verbose", action="store_true", help="per clip: what fired when")
    ap.add_argument(
        "--phases",
        default="0",
        help="sampling phases, fractions of a period (e.g. 0,0.25,0.5,0.75): a live camera's "
        "samples fall anywhere between a clip's frames, and results depend on where",
    )
    ap.add_argument("--rtsp", action="store_true", help="also run a subset over RTSP")
    ap.add_argument(
        "--rtsp-lead-in",
        type=float,
        default=LEAD_IN_S,
        help="seconds of each clip's first frame served before it over RTSP (0: none)",
    )
    ap.add_argument(
        "--square-input",
        action="store_true",
        help="letterbox every frame into the model's declared 416x416 (the default input "
        "follows the frame's aspect ratio)",
    )
    ap.add_argument(
        "--pose",
        choices=["auto", "mediapipe", "off"],
        default="auto",
        help="pose estimator for postures a box leaves open (auto: MediaPipe where installed)",
    )
    args = ap.parse_args()
    if not MEDIA.is_dir() or not MODEL.is_file():
        print(f"needs the footage in {MEDIA} and the model {MODEL}", file=sys.stderr)
        return 2
    detector = YoloxDetector(MODEL, rectangular=not args.square_input)
    pose = load_pose(args.pose)
    print(f"pose: {type(pose).__name__ if pose is not None else 'off'}")
    files = sorted(p for p in LABELS.glob("*.yaml") if args.only in p.name)
    phases = [float(x) for x in args.phases.split(",")]
    if any(not 0 <= ph < 1 for ph in phases):
        ap.error("--phases are fractions of the sampling period, each in [0, 1)")
    results = []
    by_phase: dict[float, list[ClipResult]] = {ph: [] for ph in phases}
    for path, phase in [(p, ph) for ph in phases for p in files]:
        labels = load_labels(path)
        if not (MEDIA / labels.clip).is_file():
            print(f"skip {labels.clip}: not in {MEDIA}", file=sys.stderr)
            continue
        res = run_clip(labels, detector, args.fps, phase, pose)
        results.append(res)
        by_phase[phase].append(res)
        if args.verbose:
            parts = []
            for kind in RULES:
                want = [f"{e.onset:.1f}" for e in labels.expected[kind]]
                got = [f"{c.start_time - T0:.1f}" for c in res.fired[kind]]
                if want or got:
                    parts.append(f"{kind}: want {want} got {got}")
            where = f"{labels.clip} @{phase:g}" if len(phases) > 1 else labels.clip
            print(f"{where:<48} " + "; ".join(parts or ["nothing expected, nothing fired"]))
    frames = sum(r.frames for r in results)
    secs = sum(r.seconds for r in results)
    print(
        f"\n{len(results)} clips, {frames} frames at {args.fps:g} fps in {secs:.1f} s "
        f"({1000 * secs / max(frames, 1):.1f} ms per frame incl. decode)\n"
    )
    if len(phases) > 1:
        for ph, part in by_phase.items():
            print(f"sampling phase {ph:g} of a period:")
            print_table(score(part))
            print()
        print(f"all {len(phases)} phases together:")
    print_table(score(results))
    print_groups(results)
    if isinstance(pose, MediapipePose) and pose.calls:
        print(
            f"\npose: {pose.calls} calls in {frames} frames ({pose.calls / max(frames, 1):.2f} "
            f"per frame), {1000 * pose.busy_s / pose.calls:.1f} ms per call"
        )
    if args.rtsp:
        subset = [load_labels(p) for p in files]
        subset = [lab for lab in subset if lab.clip in RTSP_SUBSET]
        over_rtsp = run_rtsp(subset, args.fps, args.rtsp_lead_in, args.pose)
        if over_rtsp:
            lead = f"{args.rtsp_lead_in:g} s lead-in" if args.rtsp_lead_in > 0 else "no lead-in"
            print(f"\nover RTSP ({len(over_rtsp)} clips, real time, {lead}):")
            print_table(score(over_rtsp))
            same = [r for r in results if r.labels.clip in RTSP_SUBSET]
            print(f"\nthe same clips from files ({LEAD_IN_S:g} s lead-in):")
            print_table(score(same))
    removed = [r for r in results if r.labels.removed]
    if removed:
        for r in removed:
            print(
                f"\nremoved objects in {r.labels.clip}: labelled {r.labels.removed}, "
                f"events {[round(t, 1) for t in r.removed_events]}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Probe (issue 8): does MediaPipe pose (mediapipe==0.10.21) help posture / fall detection?

Runs outside the project's environment (mediapipe pins numpy<2, pulls opencv-contrib-python 4.11):

    python3 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.21 av pyyaml
    /tmp/mpvenv/bin/pip install --no-deps numpy==2.4.6
    /tmp/mpvenv/bin/python bench/pose_probe.py [--fps 2] [--static] [--hold 1] [--only a01] [-v]

Imports no streamd code. For each labelled UP-Fall clip it samples frames, runs Pose on each,
derives a posture from the landmarks and scores it against bench/labels/upfall__*.yaml:
per-frame lying precision/recall, a "lying for 5 s" alert, and a fall signal (upright -> lying
within 2 s, onset within +-2 s of the labelled fall start).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import mediapipe as mp
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
LABELS = Path(__file__).resolve().parent / "labels"

LYING_TORSO_DEG = 55.0  # torso within 35 deg of horizontal
LYING_LEGS_DEG = 45.0  # hip->knee also far from vertical (a deep bend keeps the thighs upright)
UPRIGHT_DEG = 30.0
FALL_WINDOW_S = 2.0
FALL_TOL_S = 2.0
LYING_ALERT_S = 5.0
LYING_TOL_S = 3.0
SYMBOL = {"lying": "L", "upright": "|", "other": "~", "none": "."}
GROUPS = {
    "falls a01-a05": range(1, 6),
    "non-falls a06-a10": range(6, 11),
    "lying a11": range(11, 12),
}


@dataclass
class Sample:
    t: float
    found: bool
    posture: str  # "lying" | "upright" | "other" | "none"
    torso_deg: float
    ms: float


@dataclass
class ClipResult:
    name: str
    activity: int
    cam: int
    samples: list[Sample]
    lying: list[tuple[float, float]]
    fall_starts: list[float]
    fall_hits: int = 0
    false_falls: int = 0
    lying_hits: int = 0
    lying_spells: int = 0
    false_lying: int = 0
    fall_times: list[float] = field(default_factory=list)


def tilt_deg(top: np.ndarray, bottom: np.ndarray) -> float:
    """Angle of bottom->top from image 'up' (0 = vertical, 90 = horizontal, 180 = upside down)."""
    dx, dy = float(top[0] - bottom[0]), float(top[1] - bottom[1])
    n = math.hypot(dx, dy)
    return 0.0 if n < 1e-6 else math.degrees(math.acos(max(-1.0, min(1.0, -dy / n))))


def posture(landmarks: Any, width: int, height: int) -> tuple[str, float]:
    pts = np.array([[p.x * width, p.y * height, p.visibility] for p in landmarks.landmark])
    shoulders, hips, knees = pts[[11, 12], :2].mean(0), pts[[23, 24], :2].mean(0), pts[[25, 26]]
    torso = tilt_deg(shoulders, hips)
    legs_seen = float(knees[:, 2].min()) > 0.3
    legs = tilt_deg(hips, knees[:, :2].mean(0)) if legs_seen else None
    head_low = pts[0, 1] >= hips[1] - 0.25 * float(np.linalg.norm(shoulders - hips))
    # lying: torso near horizontal, thighs far from vertical (thighs unseen: head down at hip level)
    if torso >= LYING_TORSO_DEG and (head_low if legs is None else legs >= LYING_LEGS_DEG):
        return "lying", torso
    if torso <= UPRIGHT_DEG and (legs is None or legs <= UPRIGHT_DEG):
        return "upright", torso
    return "other", torso


def load(path: Path) -> tuple[list[tuple[float, float]], list[float]]:
    doc = yaml.safe_load(path.read_text())
    facts = doc.get("facts") or {}
    dur = float(doc["duration_s"])
    lying = [
        (float(s["start"]), dur if s.get("end") is None else float(s["end"]))
        for s in facts.get("lying") or []
    ]
    return lying, [float(f["start"]) for f in facts.get("falls") or []]


def run_clip(path: Path, fps: float, static: bool, hold_s: float) -> ClipResult:
    name = path.stem.split("__", 1)[1]
    activity, cam = int(name[1:3]), int(name[-1])
    lying, falls = load(path)
    pose = mp.solutions.pose.Pose(static_image_mode=static, model_complexity=1)
    samples: list[Sample] = []
    with av.open(str(MEDIA / "upfall" / f"{name}.mp4")) as container:
        next_t = 0.0
        for frame in container.decode(container.streams.video[0]):
            t = float(frame.time or 0.0)
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            rgb = frame.to_ndarray(format="rgb24")
            t0 = time.perf_counter()
            res = pose.process(rgb)
            ms = (time.perf_counter() - t0) * 1000.0
            if res.pose_landmarks is None:
                samples.append(Sample(t, False, "none", float("nan"), ms))
            else:
                kind, deg = posture(res.pose_landmarks, rgb.shape[1], rgb.shape[0])
                samples.append(Sample(t, True, kind, deg, ms))
    pose.close()
    result = ClipResult(name, activity, cam, samples, lying, falls)
    score(result, hold_s)
    return result


def held(samples: list[Sample], hold_s: float) -> list[tuple[float, str]]:
    """(t, posture), a pose dropout of at most hold_s keeping the last posture seen."""
    out: list[tuple[float, str]] = []
    last_found = -1e9
    for smp in samples:
        if smp.found:
            last_found = smp.t
            out.append((smp.t, smp.posture))
        else:
            keep = bool(out) and smp.t - last_found <= hold_s + 1e-6
            out.append((smp.t, out[-1][1] if keep else "none"))
    return out


def score(r: ClipResult, hold_s: float) -> None:
    seq = held(r.samples, hold_s)
    # fall: a lying sample confirmed by the next sample, with an upright sample in the 2 s before it
    last_upright: float | None = None
    armed = True
    for i, (t, kind) in enumerate(seq):
        if kind == "upright":
            last_upright, armed = t, True
        elif kind == "lying" and armed and last_upright is not None:
            confirmed = i + 1 < len(seq) and seq[i + 1][1] == "lying"
            if confirmed and t - last_upright <= FALL_WINDOW_S:
                r.fall_times.append(last_upright)
                armed = False
    matched: set[int] = set()
    for ft in r.fall_times:
        near = [j for j, st in enumerate(r.fall_starts) if abs(ft - st) <= FALL_TOL_S]
        hit = next((j for j in near if j not in matched), None)
        if hit is None:
            r.false_falls += 1
        else:
            matched.add(hit)
    r.fall_hits = len(matched)
    # "lying for 5 s" alert: first time every sample of the last 5 s says lying
    alerts: list[float] = []
    run_start: float | None = None
    for t, kind in seq:
        if kind != "lying":
            run_start = None
            continue
        run_start = t if run_start is None else run_start
        if t - run_start >= LYING_ALERT_S - 1e-6 and (not alerts or alerts[-1] < run_start):
            alerts.append(run_start)
    spells = [(a, b) for a, b in r.lying if b - a >= LYING_ALERT_S]
    r.lying_spells = len(spells)
    # onset tolerance as in accuracy.py: the run must begin within 3 s of the labelled lying start
    r.lying_hits = sum(any(abs(a - st) <= LYING_TOL_S for a in alerts) for st, _ in spells)
    r.false_lying = sum(not any(st - LYING_TOL_S <= a <= en for st, en in spells) for a in alerts)


def is_lying(r: ClipResult, t: float) -> bool:
    return any(a <= t < b for a, b in r.lying)


def row(label: str, rs: list[ClipResult]) -> str:
    samples = [(r, s) for r in rs for s in r.samples]
    n = len(samples)
    if not n:
        return f"{label:<20}     0"
    found = sum(s.found for _, s in samples)
    tp = sum(s.posture == "lying" and is_lying(r, s.t) for r, s in samples)
    pred = sum(s.posture == "lying" for _, s in samples)
    truth = sum(is_lying(r, s.t) for r, s in samples)
    falls = sum(len(r.fall_starts) for r in rs)
    # skip each clip's first call (model warm-up, ~230 ms)
    ms = [s.ms for r in rs for s in r.samples[1:]] or [float("nan")]
    prec = f"{tp / pred:.2f}" if pred else "  - "
    rec = f"{tp / truth:.2f}" if truth else "  - "
    fall = f"{sum(r.fall_hits for r in rs)}/{falls}" if falls else "  - "
    spells = sum(r.lying_spells for r in rs)
    ly = f"{sum(r.lying_hits for r in rs)}/{spells}" if spells else "  - "
    return (
        f"{label:<20}{len(rs):>6}{n:>7}{100 * found / max(n, 1):>7.0f}%{prec:>7}{rec:>7}{ly:>7}"
        f"{sum(r.false_lying for r in rs):>6}{fall:>7}{sum(r.false_falls for r in rs):>6}"
        f"{statistics.mean(ms):>7.1f}{float(np.percentile(ms, 90)):>7.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--static", action="store_true", help="static_image_mode (no ROI tracking)")
    ap.add_argument("--hold", type=float, default=1.0, help="s a pose dropout keeps the posture")
    ap.add_argument("--only", default="", help="substring filter on clip names")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    results: list[ClipResult] = []
    for path in sorted(LABELS.glob("upfall__a*_trial*_cam*.yaml")):
        if args.only not in path.stem:
            continue
        r = run_clip(path, args.fps, args.static, args.hold)
        results.append(r)
        if args.verbose:
            seq = "".join(SYMBOL[s.posture] for s in r.samples)
            found = [round(x, 1) for x in r.fall_times]
            print(f"{r.name}: falls {r.fall_starts} -> {found} {seq[:90]}")
    mode = "static" if args.static else "tracking"
    print(
        f"\nMediaPipe pose_landmark_full, {mode} mode, {args.fps:g} fps, whole 640x480 frame, "
        f"dropout hold {args.hold:g} s (fall / 5 s alert only; lyP/lyR are raw per frame)"
    )
    print(
        f"{'group':<20}{'clips':>6}{'frames':>7}{'pose':>8}{'lyP':>7}{'lyR':>7}{'ly5s':>7}"
        f"{'lyFP':>6}{'falls':>7}{'FP':>6}{'ms':>7}{'ms90':>7}"
    )
    for label, acts in GROUPS.items():
        print(row(label, [r for r in results if r.activity in acts]))
    for cam in (1, 2):
        print(row(f"all cam{cam}", [r for r in results if r.cam == cam]))
    print(row("all", results))


if __name__ == "__main__":
    main()

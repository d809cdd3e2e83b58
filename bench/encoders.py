"""Benchmark the token encoders on real footage: ms per frame, tokens per frame, cache hits.

    python bench/encoders.py              # ../shared clips, about a minute on 2 cores

- objects: the person and parking-lot clips of ../shared/media, sampled at 1 fps through the
  world model (`Perception`: YOLOX-nano, background model, tracker; not counted) into the
  objects encoder (colours, captions, MiniLM); the person clip is replayed three times, as a
  camera sees the same scene for hours, to show the caption cache's steady state. Then search
  latency over that window.
- clip: a tiny random CLIPModel (hidden 32, as in the tests) and the frame → views → tensor
  path with a 2×2 grid, so the number is this code's overhead plus a trivial model. A real
  checkpoint's cost (5 views a frame with grid 2) could not be measured here: no CLIP or
  SigLIP weights can be downloaded on these machines.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av

from streamd.config import WindowConfig
from streamd.ingest.frame import Frame
from streamd.perception.detector import YoloxDetector
from streamd.perception.model import Perception
from streamd.perception.world import WorldState
from streamd.window.camera_window import CameraWindow
from streamd.window.encoders import ObjectsBackend, load_backend
from streamd.window.search import WindowSearch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIPS = {
    "people": SHARED / "media" / "intel_one-by-one-person-detection.mp4",
    "lot": SHARED / "media" / "intel_car-detection.mp4",
}
MODEL = SHARED / "models" / "yolox_nano.onnx"
FPS = 1.0


def observations(path: Path, perception: Perception, t0: float) -> list[WorldState]:
    out = []
    with av.open(str(path)) as c:
        nxt = 0.0
        for i, f in enumerate(c.decode(c.streams.video[0])):
            t = float(f.time or 0.0)
            if t + 1e-6 < nxt:
                continue
            nxt += 1 / FPS
            out.append(perception.observe(Frame.from_pyav("cam", f, i, received_at=t0 + t)))
    return out


def bench_objects(tmp: Path) -> None:
    backend = load_backend(WindowConfig(thumbnail_width=0))
    assert isinstance(backend, ObjectsBackend)
    detector = YoloxDetector(MODEL)
    print(f"{'clip':14} {'frames':>6} {'tokenised':>9} {'tok/frame':>9} {'ms/frame':>8} "
          f"{'p95 ms':>7} {'cache hit':>9} {'captions':>8}")  # fmt: skip
    windows = {}
    for name, path in CLIPS.items():
        cfg = WindowConfig(thumbnail_width=0)
        win = CameraWindow(name, tmp / name, backend, 1_000_000, cfg)
        enc = win.encoder
        t0 = 1_800_000_000.0
        for rep in range(3 if name == "people" else 1):
            perception = Perception(detector)
            obs = observations(path, perception, t0)
            t0 = obs[-1].ts + 5.0
            before = backend.embedder.stats()
            times, tokens = [], 0
            for o in obs:
                s = time.perf_counter()
                batch = enc.encode(o)
                if len(batch):
                    times.append(1000 * (time.perf_counter() - s))
                    tokens += len(batch)
                    win.store.append(o.ts, CameraWindow.frame_id(o.ts), batch)
            after = backend.embedder.stats()
            hits, misses = after.hits - before.hits, after.misses - before.misses
            p95 = statistics.quantiles(times, n=20)[-1]
            print(
                f"{name + f' pass {rep + 1}':14} {len(obs):6d} {len(times):9d} "
                f"{tokens / len(times):9.2f} {statistics.mean(times):8.2f} {p95:7.2f} "
                f"{hits / (hits + misses):9.1%} {after.size:8d}"
            )
        windows[name] = win
    search = WindowSearch(backend, windows)
    for q in ("a person", "a car", "a red car", "empty room"):
        runs = []
        for _ in range(30):
            r = search.search(q, limit=10)
            runs.append((r.embed_ms, r.search_ms))
        embed = statistics.median(e for e, _ in runs)
        scan = statistics.median(s for _, s in runs)
        top = r.moments[0] if r.moments else None
        desc = f"{top.camera} {top.score:.3f} {top.best_caption!r}" if top else "-"
        print(f"search {q!r:14}: embed {embed:5.1f} ms + search {scan:5.2f} ms; best: {desc}")
    total = sum(len(w.store) for w in windows.values())
    print(f"(window: {total} tokens in {len(windows)} cameras)")
    for w in windows.values():
        w.close()


def bench_tiny_clip(tmp: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_window_search import build_tiny_model

    model = build_tiny_model("clip", tmp / "tiny-clip")
    cfg = WindowConfig.model_validate({"encoder": "clip", "clip": {"model": str(model)}})
    backend = load_backend(cfg)
    enc = backend.for_camera("cam")
    perception = Perception(None)
    # every frame as if analysed: the clip encoder's cost does not depend on what is in it
    obs = [
        dataclasses.replace(o, analysed=True)
        for o in observations(CLIPS["lot"], perception, 0.0)[:30]
    ]
    for o in obs[:3]:
        enc.encode(o)  # warm up
    times = []
    for o in obs:
        s = time.perf_counter()
        batch = enc.encode(o)
        times.append(1000 * (time.perf_counter() - s))
    print(
        f"tiny CLIP (grid {backend.stats()['grid']}, {len(batch)} tokens/frame, "
        f"{o.frame.width}x{o.frame.height}): {statistics.median(times):.2f} ms/frame median"
    )


def main() -> None:
    for path in (*CLIPS.values(), MODEL):
        if not path.is_file():
            sys.exit(f"{path} is missing (../shared is needed for this benchmark)")
    with tempfile.TemporaryDirectory() as d:
        bench_objects(Path(d))
        bench_tiny_clip(Path(d))


if __name__ == "__main__":
    main()

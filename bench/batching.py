"""Does batching YOLOX-nano calls across cameras pay on this CPU? Batch 1 vs 2, 4, 8.

    python bench/batching.py [--seconds 3]

The shipped model's input is fixed at batch 1 (`images: [1, 3, 416, 416]`), and its head
reshapes to a literal `[1, 85, -1]`, so making the input dimension symbolic alone silently
mixes the images of a batch. This rewrites the batch dimension of the inputs, outputs and of
those three Reshape shapes (1 → 0, "copy the input's"), checks that a batch of real letterboxed
frames gives exactly the batch-1 outputs, then times images per second at each batch size and
ONNX Runtime thread count, with batch 1 as the baseline. Needs the `onnx` package (not a
streamd dependency: `pip install onnx==1.23.2`); exits 2 without it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODEL = SHARED / "models" / "yolox_nano.onnx"
CLIP = SHARED / "media" / "intel_one-by-one-person-detection.mp4"
SIZE = 416
_ROUNDS = 6


def dynamic_batch(src: Path, dst: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    inits = {i.name: i for i in model.graph.initializer}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        name = node.input[1]
        tensor = consts[name].attribute[0].t if name in consts else inits[name]
        shape = numpy_helper.to_array(tensor).copy()
        if shape[0] == 1:
            shape[0] = 0  # keep the input's batch size instead of forcing 1
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
            rewritten += 1
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    print(f"rewrote the batch dimension and {rewritten} Reshape shape(s)")


def blobs(n: int) -> npt.NDArray[np.float32]:
    """n real frames letterboxed to 416 (as the detector does), NCHW float32."""
    out = np.full((n, SIZE, SIZE, 3), 114, np.uint8)
    with av.open(str(CLIP)) as container:
        i, next_t = 0, 10.0
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= next_t:
                img = frame.to_ndarray(format="bgr24")
                r = min(SIZE / img.shape[0], SIZE / img.shape[1])
                h, w = round(img.shape[0] * r), round(img.shape[1] * r)
                out[i, :h, :w] = cv2.resize(img, (w, h))
                i, next_t = i + 1, next_t + 5.0
                if i == n:
                    break
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2), dtype=np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per batch size")
    args = ap.parse_args()
    try:
        import onnx  # noqa: F401
    except ImportError:
        print("bench/batching.py needs the onnx package: pip install onnx==1.23.2", file=sys.stderr)
        return 2
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the output's declared shape stays [1, ...]: warned

    def session(path: Path, threads: int) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    x = blobs(8)
    with tempfile.TemporaryDirectory() as tmp:
        dyn = Path(tmp) / "yolox_nano_batch.onnx"
        dynamic_batch(MODEL, dyn)
        one = session(MODEL, 1)
        ref = np.concatenate([one.run(None, {"images": x[i : i + 1]})[0] for i in range(8)])
        got = session(dyn, 1).run(None, {"images": x})[0]
        diff = float(np.abs(got - ref).max())
        print(f"batch of 8 real frames vs 8 single calls: max |difference| = {diff:g}")
        if got.shape != ref.shape or diff > 1e-4:
            print("batched outputs differ from batch 1: not usable", file=sys.stderr)
            return 1
        print(f"{'threads':>7} {'batch':>5} {'img/s':>7} {'ms/img':>7} {'× batch 1':>9}")
        sizes = (1, 2, 4, 8)
        for threads in (1, 2):
            sess = session(dyn, threads)
            for batch in sizes:
                sess.run(None, {"images": x[:batch]})  # warm-up
            # Short slices of every batch size in turn, the median per size: load from other
            # processes on a shared machine then hits all sizes alike.
            rates: dict[int, list[float]] = {b: [] for b in sizes}
            for _ in range(_ROUNDS):
                for batch in sizes:
                    xb = x[:batch]
                    n, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < args.seconds / _ROUNDS:
                        sess.run(None, {"images": xb})
                        n += batch
                    rates[batch].append(n / (time.perf_counter() - t0))
            base = statistics.median(rates[1])
            for batch in sizes:
                rate = statistics.median(rates[batch])
                print(
                    f"{threads:>7} {batch:>5} {rate:>7.1f} {1000 / rate:>7.1f} {rate / base:>9.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

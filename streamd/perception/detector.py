"""YOLOX-nano object detector (ONNX Runtime, or OpenCV's DNN module where ONNX Runtime is
absent). Finding and verifying the model file is `model_file`'s job."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

from streamd.errors import ModelError
from streamd.ingest.frame import Image
from streamd.perception.coco import COCO_CLASSES
from streamd.perception.geometry import Box, Detection
from streamd.perception.model_file import (
    OFFICIAL_YOLOX_NANO_URL,
    YOLOX_NANO_SHA256,
    resolve_model,
)

__all__ = [
    "OFFICIAL_YOLOX_NANO_URL",
    "YOLOX_NANO_SHA256",
    "YoloxDetector",
    "load_detector",
    "resolve_model",
]

_log = logging.getLogger(__name__)

_STRIDES: Final = (8, 16, 32)
_PAD_VALUE: Final = 114  # the grey YOLOX was trained with in its letterbox padding
# Grey kept below (and right of) a frame letterboxed into a non-square input. With none, a body
# on the floor at the bottom edge of a 4:3 frame was found in fewer samples (bench/accuracy.py
# over 4 phases: falls 79 -> 69, lying 67 -> 57 of 96); one stride-32 cell of it gives the
# square input's numbers back (79, 65; 64 px: 78, 66) at 288 rows instead of 416 for 16:9.
_MARGIN: Final = 32
# exp() of a raw log-size above this only happens for garbage anchors; capping it keeps float32
# from overflowing to inf (a RuntimeWarning, which the test suite turns into an error).
_MAX_LOG_WH: Final = 12.0


_Grid = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]  # anchor cells, strides


def _make_grid(height: int, width: int) -> _Grid:
    """Per-anchor (x, y) cell offsets and strides, in the order YOLOX flattens its outputs:
    stride 8, 16, 32, each row-major (x fastest)."""
    grids: list[npt.NDArray[np.float32]] = []
    strides: list[npt.NDArray[np.float32]] = []
    for stride in _STRIDES:
        rows, cols = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        grids.append(np.stack((xs.ravel(), ys.ravel()), axis=1).astype(np.float32))
        strides.append(np.full((rows * cols, 1), stride, dtype=np.float32))
    return np.concatenate(grids), np.concatenate(strides)


def _shape_free(path: Path) -> bytes | None:
    """The model with its input height and width (and so its anchor count) made symbolic.

    YOLOX is fully convolutional and its exported head reshapes to (1, 85, -1), so it runs at
    any multiple of 32; the release file merely declares 416x416. Letterboxing a 16:9 frame
    into a square spends 44 % of the network on padding: a 416x288 input costs about 0.7 of
    the square one at the same scale, with the same detections. Returns None (square input
    then) when the `onnx` package is missing or the graph is not one this edit fits.
    """
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path))
        graph = model.graph
        if len(graph.input) != 1 or len(graph.output) != 1:
            return None
        in_dims = graph.input[0].type.tensor_type.shape.dim
        out_dims = graph.output[0].type.tensor_type.shape.dim
        if len(in_dims) != 4 or len(out_dims) != 3:
            return None
        in_dims[2].dim_param, in_dims[3].dim_param = "height", "width"
        out_dims[1].dim_param = "anchors"
        # Intermediate shapes were inferred for 416x416; ONNX Runtime re-infers them.
        del graph.value_info[:]
        return bytes(model.SerializeToString())
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others
        _log.info("detector: %s kept at its declared input size (%s)", path, exc)
        return None


Runtime = Literal["auto", "onnxruntime", "opencv"]


class _Buffers:
    """One thread's reusable letterbox canvas, resize target and network input, for one
    network input shape."""

    def __init__(self, height: int, width: int) -> None:
        self.padded: Image = np.full((height, width, 3), _PAD_VALUE, dtype=np.uint8)
        self.blob: npt.NDArray[np.float32] = np.empty((1, 3, height, width), dtype=np.float32)
        self.fitted: tuple[int, int] = (height, width)
        self._resized: Image | None = None

    def resized(self, h: int, w: int) -> Image:
        if self._resized is None or self._resized.shape[:2] != (h, w):
            self._resized = np.empty((h, w, 3), dtype=np.uint8)
        return self._resized


class _OrtNet:
    """The model on ONNX Runtime: on CPU about 1.5x faster than OpenCV DNN for YOLOX-nano on
    one core here, and the way to a GPU (CUDA provider) where one is present."""

    def __init__(
        self, path: Path, model: bytes | None, threads: int, providers: list[str] | None
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available]
        missing = [p for p in wanted if p not in available]
        if missing:
            _log.warning(
                "detector: ONNX Runtime here has no %s (available: %s); using %s",
                ", ".join(missing),
                ", ".join(available),
                ", ".join(chosen or ["CPUExecutionProvider"]),
            )
        try:
            self.session = ort.InferenceSession(
                model if model is not None else str(path),
                opts,
                providers=chosen or ["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        self.input = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def forward(self, blob: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self.session.run(None, {self.input: blob})[0]
        return np.asarray(out, dtype=np.float32)


def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


class YoloxDetector:
    """YOLOX (nano by default) ONNX model; implements the `Detector` protocol.

    Runs on ONNX Runtime where it is installed (`runtime="auto"`), else OpenCV DNN. On ONNX
    Runtime the network input follows the frame's aspect ratio (long side `input_size`, short
    side plus a margin padded to a multiple of 32) instead of a square; OpenCV DNN keeps the
    square. Safe to call from several threads: each thread letterboxes into its own reused
    buffers; only the OpenCV network call is serialised (a cv2 Net holds per-inference state).
    """

    def __init__(
        self,
        model_path: Path,
        score_threshold: float = 0.35,
        nms_threshold: float = 0.45,
        input_size: int = 416,
        runtime: Runtime = "auto",
        threads: int = 1,
        providers: list[str] | None = None,
        rectangular: bool = True,
        weak_threshold: float | None = 0.1,
        weak_classes: frozenset[int] = frozenset({0}),
    ) -> None:
        if input_size <= 0 or input_size % max(_STRIDES):
            raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
        self.model_path = model_path
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        # Below the threshold, down to this, boxes of these classes (people) come back flagged
        # weak: candidates to keep a track, never objects of their own.
        self.weak_threshold = (
            None
            if weak_threshold is None or weak_threshold >= score_threshold or not weak_classes
            else weak_threshold
        )
        self._weak_classes = np.fromiter(sorted(weak_classes), dtype=np.intp)
        self.input_size = input_size
        self._grids: dict[
            tuple[int, int], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
        ] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per worker thread: letterbox and input buffers
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} does not exist")
        self._ort: _OrtNet | None = None
        self.rectangular = False
        if runtime == "onnxruntime" or (runtime == "auto" and _ort_available()):
            free = _shape_free(model_path) if rectangular else None
            self._ort = _OrtNet(model_path, free, threads, providers)
            self.runtime = "onnxruntime:" + ",".join(self._ort.providers)
            self.rectangular = free is not None
        else:
            try:
                self._net = cv2.dnn.readNetFromONNX(str(model_path))
            except cv2.error as exc:
                raise ModelError(f"cannot load ONNX model {model_path}: {exc}") from exc
            if self._net.empty():
                raise ModelError(f"ONNX model {model_path} loaded as an empty network")
            self.runtime = "opencv"
        # One forward pass now, so a model with the wrong input size or head (not YOLOX, other
        # class count) fails at startup with the file named, not on the first camera frame.
        self._check(input_size, input_size)
        if self.rectangular:
            try:
                self._check(input_size // 2 // max(_STRIDES) * max(_STRIDES), input_size)
            except ModelError as exc:
                # Shape-free editing fitted the file but the graph is not fully convolutional
                # after all: the declared square input is the one that works.
                _log.info("detector: square input only (%s)", exc)
                self._ort = _OrtNet(model_path, None, threads, providers)
                self.rectangular = False

    def _check(self, height: int, width: int) -> None:
        blank = np.full((height, width, 3), _PAD_VALUE, dtype=np.uint8)
        try:
            out = self._forward(blank)
        except Exception as exc:  # cv2.error, or onnxruntime's own errors
            raise ModelError(
                f"ONNX model {self.model_path} cannot run a {width}×{height} input: {exc}"
            ) from exc
        expected = (len(self._grid(height, width)[0]), 5 + len(COCO_CLASSES))
        if out.shape != expected:
            raise ModelError(
                f"ONNX model {self.model_path} outputs shape {out.shape}, expected {expected} "
                f"(YOLOX with {len(COCO_CLASSES)} COCO classes at input {width}×{height})"
            )

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """The network input (height, width) a frame of this size is letterboxed into."""
        if not self.rectangular:
            return self.input_size, self.input_size
        ratio = self.input_size / max(height, width)
        return (
            min(self.input_size, _ceil_to(round(height * ratio) + _MARGIN, max(_STRIDES))),
            min(self.input_size, _ceil_to(round(width * ratio) + _MARGIN, max(_STRIDES))),
        )

    def _grid(self, height: int, width: int) -> _Grid:
        grid = self._grids.get((height, width))
        if grid is None:
            # Cameras come in a handful of shapes; a dict store is atomic under the GIL, and
            # two threads racing to build the same grid build equal ones.
            grid = self._grids[(height, width)] = _make_grid(height, width)
        return grid

    def _forward(self, padded: Image) -> npt.NDArray[np.float32]:
        # YOLOX wants BGR 0-255 float32 in NCHW, no mean/std: one transposing copy into this
        # thread's reused blob (no per-frame allocation of the 2 MB input).
        bufs = self._buffers(padded.shape[0], padded.shape[1])
        np.copyto(bufs.blob[0], padded.transpose(2, 0, 1))
        if self._ort is not None:
            # ONNX Runtime sessions are safe to run from several threads at once.
            out = self._ort.forward(bufs.blob)
        else:
            with self._lock:  # a cv2 Net holds per-inference state
                self._net.setInput(bufs.blob)
                out = np.asarray(self._net.forward(), np.float32)
        return np.asarray(out, dtype=np.float32).reshape(-1, out.shape[-1])

    def _buffers(self, height: int, width: int) -> _Buffers:
        table: dict[tuple[int, int], _Buffers] | None = getattr(self._local, "buffers", None)
        if table is None:
            table = self._local.buffers = {}
        bufs = table.get((height, width))
        if bufs is None:
            bufs = table[(height, width)] = _Buffers(height, width)
        return bufs

    def _letterbox(self, image: Image) -> tuple[Image, float]:
        """Scale the long side to input_size keeping aspect, pad right/bottom (top-left
        aligned, so the inverse mapping is a plain division by the ratio). Returns this
        thread's reused buffer: valid until this thread's next call for the same shape."""
        h, w = image.shape[:2]
        ih, iw = self.input_shape(h, w)
        ratio = self.input_size / max(h, w)  # the same scale, square input or not
        nw, nh = max(1, round(w * ratio)), max(1, round(h * ratio))
        bufs = self._buffers(ih, iw)
        padded = bufs.padded
        if bufs.fitted != (nh, nw):
            # Only a change of frame shape repaints the padding; the same camera's frames
            # overwrite the same top-left region every time.
            padded.fill(_PAD_VALUE)
            bufs.fitted = (nh, nw)
        if (nw, nh) == (w, h):
            padded[:nh, :nw] = image
        else:
            region = padded[:nh, :nw]
            resized = cv2.resize(image, (nw, nh), dst=bufs.resized(nh, nw))
            region[...] = resized
        return padded, ratio

    def detect(self, image: Image) -> list[Detection]:
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected a non-empty BGR image of shape HxWx3, got {image.shape}")
        h, w = image.shape[:2]
        padded, ratio = self._letterbox(image)
        pred = self._forward(padded)

        class_scores = pred[:, 5:] * pred[:, 4:5]
        class_ids = class_scores.argmax(axis=1)
        scores = np.take_along_axis(class_scores, class_ids[:, None], axis=1)[:, 0]
        # Thresholding before box decoding keeps the exp() and NMS to a handful of anchors.
        keep = scores >= self.score_threshold
        floor = self.score_threshold
        if self.weak_threshold is not None:
            floor = self.weak_threshold
            keep |= (scores >= floor) & np.isin(class_ids, self._weak_classes)
        if not keep.any():
            return []
        raw, class_ids, scores = pred[keep, :4], class_ids[keep], scores[keep]
        all_grid, all_stride = self._grid(padded.shape[0], padded.shape[1])
        grid, stride = all_grid[keep], all_stride[keep]

        centre = (raw[:, :2] + grid) * stride
        half = np.exp(np.minimum(raw[:, 2:4], _MAX_LOG_WH)) * stride / 2
        xyxy = np.concatenate((centre - half, centre + half), axis=1) / ratio
        # Clip before NMS so overlap is judged on what is actually inside the frame.
        np.clip(xyxy, 0, [w, h, w, h], out=xyxy)
        wh = xyxy[:, 2:] - xyxy[:, :2]
        visible = (wh > 0).all(axis=1)
        if not visible.any():
            return []
        xyxy, wh, class_ids, scores = (
            xyxy[visible],
            wh[visible],
            class_ids[visible],
            scores[visible],
        )

        # Batched (per-class) NMS: a person standing in front of a car must not suppress it.
        # Weak and strong boxes go through it together, so a weak one is never a duplicate of
        # a strong one.
        # The binding is typed for sequences; after thresholding there are only a few dozen
        # candidates, so converting to lists costs microseconds.
        picked = cv2.dnn.NMSBoxesBatched(
            np.concatenate((xyxy[:, :2], wh), axis=1).tolist(),
            scores.tolist(),
            class_ids.tolist(),
            floor,
            self.nms_threshold,
        )
        order = np.asarray(picked, dtype=np.intp).ravel()
        order = order[np.argsort(-scores[order], kind="stable")]
        return [
            Detection(
                label=COCO_CLASSES[int(class_ids[i])],
                class_id=int(class_ids[i]),
                score=float(scores[i]),
                box=Box(*(float(v) for v in xyxy[i])),
                weak=bool(scores[i] < self.score_threshold),
            )
            for i in order
        ]


def load_detector(
    path: Path | None,
    url: str | None,
    sha256: str | None,
    cache_dir: Path,
    score_threshold: float = 0.35,
    threads: int = 1,
    runtime: Runtime = "auto",
    providers: list[str] | None = None,
    weak_threshold: float | None = 0.1,
) -> YoloxDetector | None:
    """Resolve the model (local file or verified download) and build a detector from it.

    Returns None when no model could be obtained (offline, nothing configured); raises
    ModelError when a file exists but is wrong (checksum, corrupt, not a YOLOX model).
    """
    resolved = resolve_model(path, url, sha256, cache_dir)
    if resolved is None:
        return None
    return YoloxDetector(
        resolved,
        score_threshold=score_threshold,
        threads=threads,
        runtime=runtime,
        providers=providers,
        weak_threshold=weak_threshold,
    )

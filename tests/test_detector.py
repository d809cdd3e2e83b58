"""YoloxDetector on real footage, plus model resolution (checksum, corrupt file, offline).

Frame times below come from watching the clips frame by frame, not from the media README,
whose car timings are about 2 s early for this file.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamd.errors import ModelError
from streamd.ingest.frame import Image
from streamd.perception.detector import (
    YOLOX_NANO_SHA256,
    YoloxDetector,
    load_detector,
    resolve_model,
)
from streamd.perception.geometry import Box, Detection

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODEL = SHARED / "models" / "yolox_nano.onnx"
PERSON_CLIP = SHARED / "media" / "intel_one-by-one-person-detection.mp4"
CAR_CLIP = SHARED / "media" / "intel_car-detection.mp4"
FALL_ON_MATTRESS = SHARED / "media" / "upfall" / "a04_trial3_cam2.mp4"
UNREACHABLE_URL = "http://127.0.0.1:9/nope.onnx"  # port 9 (discard) is closed: instant refusal

# intel_one-by-one-person-detection.mp4, sampled every 5 s: a person stands at the table in
# these frames (75 s: only head and shoulders, walking in at the bottom edge) ...
PERSON_VISIBLE_S = (10, 15, 25, 30, 35, 40, 55, 60, 65, 75, 80, 85, 95, 100, 105, 110, 115, 125)
# ... and the room is empty in these.
ROOM_EMPTY_S = (0, 5, 20, 45, 50, 70, 90, 120)

# intel_car-detection.mp4 (768×432): a white car crosses at ≈5.8-8 s, a silver and a red car at
# ≈15.6-18.7 s, a white car again at ≈25.9-27.6 s; the lot is empty in between.
WHITE_CAR_S = 6.0
WHITE_CAR_BOX = Box(270, 127, 458, 422)  # drawn by hand on the 6.0 s frame
TWO_CARS_S = 16.5
EMPTY_LOT_S = (10.0, 12.0, 21.0, 23.0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _frames_at(path: Path, times: Iterable[float]) -> dict[float, Image]:
    """The first decoded frame at or after each time (seconds), via seek + decode forward."""
    if not path.is_file():
        pytest.skip(f"test clip {path} not present (shared/media is not part of the repo)")
    out: dict[float, Image] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        for t in times:
            container.seek(int(t / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= t - 1e-3:
                    out[t] = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
                    break
    assert len(out) == len(set(times)), f"{path.name} ended before {max(times)} s"
    return out


def _labels(dets: list[Detection]) -> list[tuple[str, float]]:
    return [(d.label, round(d.score, 2)) for d in dets]


@pytest.fixture(scope="module")
def detector() -> YoloxDetector:
    if not MODEL.is_file():
        pytest.skip(f"model {MODEL} not present (shared/models is not part of the repo)")
    return YoloxDetector(MODEL)


@pytest.mark.media
def test_shared_model_is_the_pinned_file(tmp_path: Path) -> None:
    if not MODEL.is_file():
        pytest.skip(f"model {MODEL} not present")
    assert resolve_model(MODEL, None, YOLOX_NANO_SHA256, tmp_path) == MODEL


@pytest.mark.media
def test_people_are_detected_when_present(detector: YoloxDetector) -> None:
    frames = _frames_at(PERSON_CLIP, PERSON_VISIBLE_S + ROOM_EMPTY_S)
    results = {t: detector.detect(frames[t]) for t in frames}

    def has_person(t: float) -> bool:
        return any(d.label == "person" and d.score >= 0.35 for d in results[t])

    missed = [t for t in PERSON_VISIBLE_S if not has_person(t)]
    assert len(missed) <= len(PERSON_VISIBLE_S) // 10, (
        f"no person at {missed}: {[_labels(results[t]) for t in missed]}"
    )
    phantom = [t for t in ROOM_EMPTY_S if has_person(t)]
    assert not phantom, f"person in the empty room at {phantom}"
    for t in PERSON_VISIBLE_S:
        for d in results[t]:
            assert (d.label == "person") == (d.class_id == 0)


@pytest.mark.media
def test_passing_cars_are_localised_and_empty_lot_is_empty(detector: YoloxDetector) -> None:
    frames = _frames_at(CAR_CLIP, (WHITE_CAR_S, TWO_CARS_S, *EMPTY_LOT_S))
    h, w = frames[WHITE_CAR_S].shape[:2]
    assert (w, h) == (768, 432)  # letterboxed: 416×234 content + 182 rows of padding

    white = detector.detect(frames[WHITE_CAR_S])
    assert white, "nothing detected on the white car"
    # Class-agnostic on purpose: see test_top_down_car_gets_the_car_label.
    best = max(white, key=lambda d: d.box.iou(WHITE_CAR_BOX))
    assert best.score >= 0.5
    assert best.box.iou(WHITE_CAR_BOX) >= 0.8, (best.box, WHITE_CAR_BOX)

    two = detector.detect(frames[TWO_CARS_S])
    assert len(two) >= 2, f"expected the silver and the red car, got {_labels(two)}"

    for t in EMPTY_LOT_S:
        assert detector.detect(frames[t]) == [], f"detections in the empty lot at {t} s"

    for det in (*white, *two):
        b = det.box
        assert 0 <= b.x1 < b.x2 <= w
        assert 0 <= b.y1 < b.y2 <= h


@pytest.mark.media
@pytest.mark.xfail(
    strict=True,
    reason="YOLOX-nano (COCO) has seen few cars from above: on this top-down clip the white "
    "car is 'cell phone' (0.94), the silver/red ones 'cell phone'/'suitcase'/'bus'; 'car' only "
    "appears for cars cut off at the frame edge. Rules must not rely on the label 'car' here.",
)
def test_top_down_car_gets_the_car_label(detector: YoloxDetector) -> None:
    frame = _frames_at(CAR_CLIP, (WHITE_CAR_S,))[WHITE_CAR_S]
    assert any(d.label in {"car", "truck"} for d in detector.detect(frame))


@pytest.mark.media
def test_boxes_follow_scaling_and_cropping(detector: YoloxDetector) -> None:
    """Same person seen through a 2× upscale and a portrait crop (padding then lies to the
    right instead of below) must map back to the same place in each image's own pixels."""
    frame = _frames_at(PERSON_CLIP, (30.0,))[30.0]

    def person(image: Image) -> Box:
        people = [d for d in detector.detect(image) if d.label == "person"]
        assert len(people) == 1, _labels(people)
        return people[0].box

    ref = person(frame)

    big = person(np.asarray(cv2.resize(frame, None, fx=2, fy=2), dtype=np.uint8))
    assert Box(big.x1 / 2, big.y1 / 2, big.x2 / 2, big.y2 / 2).iou(ref) >= 0.95

    x0 = 280
    crop = np.ascontiguousarray(frame[:, x0 : x0 + 360])
    assert crop.shape[0] > crop.shape[1]
    c = person(crop)
    assert c.x2 <= crop.shape[1]
    assert Box(c.x1 + x0, c.y1, c.x2 + x0, c.y2).iou(ref) >= 0.85


@pytest.mark.media
def test_concurrent_detect_matches_serial(detector: YoloxDetector) -> None:
    frames = list(_frames_at(PERSON_CLIP, (30.0, 60.0, 100.0, 130.0)).values())
    serial = [detector.detect(f) for f in frames]
    results: dict[int, list[Detection]] = {}

    def work(i: int) -> None:
        results[i] = detector.detect(frames[i % len(frames)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4 * len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, dets in results.items():
        assert dets == serial[i % len(frames)]


@pytest.mark.media
def test_rejects_non_bgr_input(detector: YoloxDetector) -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="HxWx3"):
        detector.detect(np.zeros((0, 10, 3), dtype=np.uint8))


def test_local_checksum_mismatch_raises(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    wrong = "0" * 64
    with pytest.raises(ModelError) as err:
        resolve_model(model, None, wrong, tmp_path / "cache")
    message = str(err.value)
    assert str(model) in message
    assert wrong in message
    assert _sha256(b"not a model") in message


def test_local_file_with_matching_or_no_checksum_is_used(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"bytes")
    assert resolve_model(model, None, _sha256(b"bytes").upper(), tmp_path) == model
    assert resolve_model(model, UNREACHABLE_URL, None, tmp_path) == model


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
def test_corrupt_onnx_raises_model_error(tmp_path: Path, runtime: str) -> None:
    model = tmp_path / "corrupt.onnx"
    model.write_bytes(b"\x08\x07garbage that is not a protobuf graph" * 10)
    with pytest.raises(ModelError, match=str(model)) as err:
        YoloxDetector(model, runtime=runtime)  # type: ignore[arg-type]
    assert err.value.__cause__ is not None  # the runtime's own error, chained
    with pytest.raises(ModelError, match=str(model)):
        load_detector(model, None, None, tmp_path / "cache", 0.35)


def test_both_runtimes_find_the_same_people(model_path: Path, shared_dir: Path) -> None:
    clip = shared_dir / "media" / "intel_one-by-one-person-detection.mp4"
    if not clip.is_file():
        pytest.skip(f"footage missing: {clip}")
    with av.open(str(clip)) as c:  # a visitor stands at the table at ≈30 s
        img = next(f for f in c.decode(video=0) if (f.time or 0) >= 30.0).to_ndarray(format="bgr24")
    ort = YoloxDetector(model_path, runtime="onnxruntime")
    ocv = YoloxDetector(model_path, runtime="opencv")
    assert ort.runtime.startswith("onnxruntime")
    assert ocv.runtime == "opencv"
    a, b = ort.detect(img), ocv.detect(img)
    assert "person" in [d.label for d in a]
    assert [d.label for d in a] == [d.label for d in b]
    for da, db in zip(a, b, strict=True):
        assert da.box.iou(db.box) > 0.9


def test_missing_model_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        YoloxDetector(tmp_path / "absent.onnx")


def test_unreachable_url_returns_none(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert resolve_model(tmp_path / "absent.onnx", UNREACHABLE_URL, "0" * 64, cache) is None
    assert resolve_model(None, UNREACHABLE_URL, None, cache) is None
    assert load_detector(None, UNREACHABLE_URL, None, cache, 0.35) is None
    assert list(cache.iterdir()) == []  # no partial download left behind


def test_nothing_configured_returns_none(tmp_path: Path) -> None:
    assert resolve_model(None, None, None, tmp_path) is None
    assert resolve_model(tmp_path / "absent.onnx", None, None, tmp_path) is None


def test_download_verifies_and_caches(tmp_path: Path) -> None:
    # file:// goes through the same urlopen path as https, so the download logic is exercised
    # without a network.
    source = tmp_path / "release" / "model.onnx"
    source.parent.mkdir()
    source.write_bytes(b"model bytes")
    cache = tmp_path / "cache"

    with pytest.raises(ModelError, match="failed its checksum") as err:
        resolve_model(None, source.as_uri(), "f" * 64, cache)
    assert _sha256(b"model bytes") in str(err.value)
    assert list(cache.iterdir()) == []  # the rejected temp file is gone

    got = resolve_model(None, source.as_uri(), _sha256(b"model bytes"), cache)
    assert got == cache / "model.onnx"
    assert got.read_bytes() == b"model bytes"
    assert list(cache.iterdir()) == [got]

    # A verified cached copy is reused without contacting the url again.
    source.unlink()
    assert resolve_model(None, source.as_uri(), _sha256(b"model bytes"), cache) == got


def test_stale_cache_is_replaced_when_checksum_changes(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"v2")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.onnx").write_bytes(b"v1")
    got = resolve_model(None, source.as_uri(), _sha256(b"v2"), cache)
    assert got is not None
    assert got.read_bytes() == b"v2"


@pytest.mark.media
def test_load_detector_builds_from_a_download(tmp_path: Path) -> None:
    if not MODEL.is_file():
        pytest.skip(f"model {MODEL} not present")
    det = load_detector(None, MODEL.as_uri(), YOLOX_NANO_SHA256, tmp_path, score_threshold=0.5)
    assert det is not None
    assert det.model_path == tmp_path / "yolox_nano.onnx"
    assert det.score_threshold == 0.5


def test_missing_execution_provider_falls_back_to_cpu_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A config that asks for CUDA first runs on a CPU-only machine, and the log names what
    was asked for and what runs (this machine's ONNX Runtime has no CUDA provider)."""
    ort = pytest.importorskip("onnxruntime")
    if not MODEL.is_file():
        pytest.skip(f"model {MODEL} not present (shared/models is not part of the repo)")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: nothing to fall back from")
    with caplog.at_level("WARNING", logger="streamd.perception.detector"):
        det = YoloxDetector(
            MODEL,
            runtime="onnxruntime",
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    assert det.runtime == "onnxruntime:CPUExecutionProvider"
    assert "no CUDAExecutionProvider" in caplog.text
    blank = np.zeros((240, 320, 3), np.uint8)
    assert det.detect(blank) == []


@pytest.mark.media
def test_wide_frames_run_at_a_wide_input_and_find_the_same_objects(
    detector: YoloxDetector,
) -> None:
    """The 416x416 model runs at the frame's aspect ratio (long side 416, short side plus a
    margin padded to a multiple of 32): same scale as the square letterbox, same detections."""
    square = YoloxDetector(MODEL, rectangular=False)
    assert detector.rectangular
    assert not square.rectangular
    people = _frames_at(PERSON_CLIP, (15, 30, 60, 80))
    cars = _frames_at(CAR_CLIP, (WHITE_CAR_S, TWO_CARS_S))
    frames = [*people.values(), *cars.values()]
    assert detector.input_shape(*frames[0].shape[:2]) == (288, 416)  # 768x432: 234 + 32
    assert square.input_shape(*frames[0].shape[:2]) == (416, 416)
    for img in frames:
        wide, sq = detector.detect(img), square.detect(img)
        strong = [d for d in sq if d.score >= 0.5]
        assert strong, "every chosen frame has a person or a car in it"
        for d in strong:
            best = max((w.box.iou(d.box) for w in wide if w.label == d.label), default=0.0)
            assert best > 0.85, f"{d} has no match among {wide}"


def test_a_graph_with_a_fixed_size_keeps_the_square_input(tmp_path: Path) -> None:
    """A model that only runs at its declared size (here: a flatten, a fixed slice and a
    reshape, as some exporters bake in) is detected at load and run square."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    n = 3549 * 85
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("Slice", ["flat", "start", "end", "axis"], ["cut"]),
            helper.make_node("Reshape", ["cut", "shape"], ["raw"]),
            helper.make_node("Sigmoid", ["raw"], ["output"]),
        ],
        "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3549, 85])],
        [
            helper.make_tensor("start", TensorProto.INT64, [1], [0]),
            helper.make_tensor("end", TensorProto.INT64, [1], [n]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
            helper.make_tensor("shape", TensorProto.INT64, [3], [1, 3549, 85]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    detector = YoloxDetector(path, runtime="onnxruntime")
    assert not detector.rectangular
    assert detector.input_shape(720, 1280) == (416, 416)
    detector.detect(np.zeros((720, 1280, 3), np.uint8))  # runs; what it finds is noise


@pytest.mark.media
def test_weak_people_come_flagged_and_change_nothing_else(detector: YoloxDetector) -> None:
    """Below the threshold, down to `weak_threshold`, person boxes come back flagged weak
    (candidates to keep a tracked person); confident detections are exactly what a detector
    without weak boxes returns, and no weak box duplicates a confident one."""
    strict = YoloxDetector(MODEL, weak_threshold=None)
    frames = list(_frames_at(PERSON_CLIP, PERSON_VISIBLE_S + ROOM_EMPTY_S).items())
    # UP-Fall a04 (trial 3, camera 2) at 3 s: a man on a mattress after falling towards the
    # camera, scored 0.18 as a person.
    frames += list(_frames_at(FALL_ON_MATTRESS, (3.0,)).items())
    weak_seen = 0
    for t, image in frames:
        both = detector.detect(image)
        weak = [d for d in both if d.weak]
        strong = [d for d in both if not d.weak]
        assert _labels(strong) == _labels(strict.detect(image)), t
        for d in weak:
            assert d.label == "person", (t, d)
            assert 0.1 <= d.score < 0.35, (t, d)
            assert all(d.box.iou(s.box) <= 0.45 for s in strong if s.label == "person"), t
        weak_seen += len(weak)
    assert weak_seen > 0

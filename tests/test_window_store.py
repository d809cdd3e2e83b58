"""TokenStore: budget and age eviction, dedup, memory, persistence (incl. kill -9), search."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from streamd.errors import StreamdError
from streamd.window.moments import find_runs
from streamd.window.store import TokenBatch, TokenKind, TokenStore, WindowError
from streamd.window.vectors import Query, _numpy_scores, int8_scores, quantise

DIM = 32
F32 = npt.NDArray[np.float32]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> F32:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def dense_batch(rng: np.random.Generator, n: int = 10, dim: int = DIM) -> TokenBatch:
    return TokenBatch.create(unit(rng, n, dim), TokenKind.TILE)


def frame_ts(i: int) -> float:
    # Irregular, non-round times: a restart must give back exactly these floats.
    return 1_700_000_000.0 + i * 0.37 + (i % 3) * 0.011


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# -- eviction ---------------------------------------------------------------------------------


def test_budget_keeps_newest_frames(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM, budget=1000, segment_tokens=200) as store:
        for t in range(300):
            store.append(float(t), t, dense_batch(rng, 10))
        assert len(store) == 1000
        assert store.frames_count == 100
        assert store.span() == (200.0, 299.0)
        np.testing.assert_array_equal(store.timestamps(), np.arange(200, 300, dtype=np.float64))


def test_budget_with_uneven_frames_stays_within_one_frame(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    with TokenStore(tmp_path, DIM, budget=500, segment_tokens=100) as store:
        sizes = rng.integers(1, 30, size=400)
        for t, n in enumerate(sizes):
            store.append(float(t), t, dense_batch(rng, int(n)))
            assert len(store) <= 500
        assert len(store) > 500 - sizes.max()
        first, last = store.span() or (None, None)
        assert last == 399.0
        # Exactly the newest frames that fit: adding the next older one would overflow.
        kept = store.frames_count
        assert sizes[-kept:].sum() == len(store)
        assert sizes[-kept - 1 :].sum() > 500
        assert first == float(400 - kept)


def test_max_age_evicts_old_frames(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM, budget=100_000, max_age_s=30.0, segment_tokens=64) as store:
        for t in range(100):
            store.append(float(t), t, dense_batch(rng, 5))
        assert store.span() == (69.0, 99.0)
        assert len(store) == 31 * 5
    with TokenStore(tmp_path, DIM, budget=100_000, max_age_s=10.0, segment_tokens=64) as s:
        assert s.span() == (89.0, 99.0)  # a tighter age applies on reopening


def test_frames_must_not_go_back_in_time(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM) as store:
        store.append(10.0, 1, dense_batch(rng))
        store.append(10.0, 2, dense_batch(rng))  # same time is fine (two cameras' clocks tie)
        with pytest.raises(WindowError, match="time order"):
            store.append(9.5, 3, dense_batch(rng))
        assert store.frames_count == 2


# -- vectors ----------------------------------------------------------------------------------


def test_same_key_is_one_vector_row(tmp_path: Path, rng: np.random.Generator) -> None:
    captions = ["red car, stationary, right side", "person, walking, left", "scene: parking lot"]
    vecs = unit(rng, 3)
    with TokenStore(tmp_path, DIM, budget=100_000, segment_tokens=256) as store:
        for t in range(500):  # spans several segments, each with its own copy on disk
            store.append(
                float(t),
                t,
                TokenBatch.create(
                    vecs,
                    [TokenKind.OBJECT, TokenKind.OBJECT, TokenKind.SCENE],
                    keys=captions,
                    captions=captions,
                ),
            )
        stats = store.stats()
        assert stats.tokens == 1500
        assert stats.segment_files >= 5
        assert stats.vector_rows == 3
        assert stats.shared_rows == 3
        best = store.search(vecs[1], limit=1)[0]
        assert best.best_caption == "person, walking, left"
        assert best.score == pytest.approx(1.0, abs=0.01)
    with TokenStore(tmp_path, DIM, budget=100_000, segment_tokens=256) as store:
        assert store.stats().vector_rows == 3  # deduplicated again across reloaded segments


def _fill(store: TokenStore, start: int, frames: int, batch: Callable[[int], TokenBatch]) -> None:
    for t in range(start, start + frames):
        store.append(float(t), t, batch(t))


@pytest.mark.parametrize("keyed", [False, True], ids=["dense", "unique-captions"])
def test_memory_is_flat_past_the_budget(
    tmp_path: Path, rng: np.random.Generator, keyed: bool
) -> None:
    """Dense rows (and keyed rows nobody uses any more) are freed with their frames."""
    budget, per_frame = 4000, 20
    frames_per_budget = budget // per_frame
    vecs = unit(rng, 64, 64)

    def batch(t: int) -> TokenBatch:
        v = np.roll(vecs, t, axis=0)[:per_frame]
        keys = [f"caption {t}-{i}" for i in range(per_frame)] if keyed else None
        return TokenBatch.create(v, TokenKind.OBJECT, keys=keys)

    with TokenStore(tmp_path, 64, budget=budget, segment_tokens=500) as store:
        _fill(store, 0, 2 * frames_per_budget, batch)
        at_2x = store.stats()
        _fill(store, 2 * frames_per_budget, 3 * frames_per_budget, batch)
        at_5x = store.stats()
        assert at_5x.tokens == budget
        assert at_5x.nbytes <= at_2x.nbytes * 1.15
        assert at_5x.vector_rows <= budget + 2 * 500  # the budget plus at most two segments
        assert at_5x.disk_bytes <= at_2x.disk_bytes * 1.15
        assert len(list(tmp_path.glob("seg-*.seg"))) <= budget // 500 + 2


# -- persistence ------------------------------------------------------------------------------


def test_close_and_reopen(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM, budget=3000, segment_tokens=250) as store:
        for t in range(500):
            store.append(frame_ts(t), t, dense_batch(rng, 7))
        before = (len(store), store.frames_count, store.span(), store.timestamps())
        planted = rng.standard_normal(DIM).astype(np.float32)
        probe = store.search(planted, limit=3)
    with TokenStore(tmp_path, DIM, budget=3000, segment_tokens=250) as store:
        assert (len(store), store.frames_count, store.span()) == before[:3]
        np.testing.assert_array_equal(store.timestamps(), before[3])
        assert store.search(planted, limit=3) == probe


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from streamd.window.store import TokenBatch, TokenStore

    directory, frames = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(7)
    store = TokenStore(directory, 32, budget=1_000_000, segment_tokens=200)
    for t in range(frames):
        v = rng.standard_normal((10, 32)).astype(np.float32)
        store.append(1_700_000_000.0 + t * 0.37 + (t % 3) * 0.011, t, TokenBatch.create(v, 3))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_kill_9_keeps_every_completed_segment(tmp_path: Path) -> None:
    # 200 tokens per segment, 10 per frame: 3 full segments and half of a fourth.
    result = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), "70"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    with TokenStore(tmp_path, 32, budget=1_000_000, segment_tokens=200) as store:
        assert len(store) == 600
        expected = np.array([frame_ts(t) for t in range(60)])
        np.testing.assert_array_equal(store.timestamps(), expected)
        # ...and the window goes on from there.
        store.append(frame_ts(100), 100, TokenBatch.create(np.ones((1, 32), np.float32), 0))
        assert len(store) == 601


def _segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.seg"))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF  # inside the arrays, past the header
    path.write_bytes(bytes(data))


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "truncated"),
        (_flip_byte, "checksum mismatch"),
        (_garble_header, "header checksum"),
        (_empty, "truncated"),
    ],
)
def test_corrupt_segment_is_skipped_with_a_warning(
    tmp_path: Path,
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    with TokenStore(tmp_path, DIM, budget=100_000, segment_tokens=100) as store:
        for t in range(40):  # 4 segments of 10 frames × 10 tokens
            store.append(float(t), t, dense_batch(rng, 10))
    files = _segment_files(tmp_path)
    assert len(files) == 4
    bad = files[1]
    damage(bad)
    with (
        caplog.at_level(logging.WARNING, logger="streamd.window.store"),
        TokenStore(tmp_path, DIM, budget=100_000, segment_tokens=100) as store,
    ):
        assert len(store) == 300
        ts = store.timestamps()
        np.testing.assert_array_equal(ts, [t for t in range(40) if not 10 <= t < 20])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(bad.name in w and reason in w for w in warnings), warnings
        store.append(50.0, 50, dense_batch(rng, 10))
    # The damaged file is left alone (nothing is deleted or overwritten) ...
    assert bad.exists()
    # ... and the window's new segment got a new name.
    assert len(_segment_files(tmp_path)) == 5


@pytest.mark.parametrize(
    ("dim", "encoder", "match"),
    [(64, "objects", "dim 32"), (32, "siglip-base", "'objects'")],
)
def test_manifest_mismatch_is_refused(
    tmp_path: Path, rng: np.random.Generator, dim: int, encoder: str, match: str
) -> None:
    with TokenStore(tmp_path, DIM, segment_tokens=100) as store:
        store.append(1.0, 1, dense_batch(rng))
    with pytest.raises(WindowError, match=match) as info:
        TokenStore(tmp_path, dim, encoder=encoder)
    assert isinstance(info.value, StreamdError)


def test_unreadable_manifest_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(WindowError, match="manifest"):
        TokenStore(tmp_path, DIM)


def test_leftover_temporary_files_are_removed(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM, segment_tokens=100) as store:
        store.append(1.0, 1, dense_batch(rng))
    leftover = tmp_path / "seg-0000000009.seg.tmp"
    leftover.write_bytes(b"half a segment")
    with TokenStore(tmp_path, DIM, segment_tokens=100) as store:
        assert len(store) == 10
    assert not leftover.exists()


# -- search -----------------------------------------------------------------------------------


def _planted_store(
    directory: Path, rng: np.random.Generator, keyed: bool
) -> tuple[TokenStore, F32]:
    """200 frames at 1 fps, 6 tokens each; the planted vector is in frames 100..105 only."""
    planted = unit(rng, 1)[0]
    pool = unit(rng, 50)
    store = TokenStore(directory, DIM, budget=100_000, segment_tokens=300, camera="lobby")
    for t in range(200):
        idx = rng.integers(0, 50, size=6)
        v = pool[idx].copy() if keyed else unit(rng, 6)
        keys: list[str | None] = [f"pool {i}" for i in idx] if keyed else [None] * 6
        captions = [f"pool {i}" for i in idx] if keyed else [f"tile {t}.{i}" for i in range(6)]
        boxes = np.tile(np.array([10, 20, 30, 40], np.float32), (6, 1))
        if 100 <= t <= 105:
            v[4] = planted
            keys[4] = captions[4] = "planted: bag, stationary, left"
        store.append(
            float(t),
            1000 + t,
            TokenBatch.create(
                v,
                TokenKind.OBJECT,
                keys=keys,
                captions=captions,
                boxes=boxes,
                track_ids=np.arange(6) + t,
                class_ids=np.full(6, 24),
            ),
        )
    return store, planted


@pytest.mark.parametrize("keyed", [False, True], ids=["dense", "captions"])
@pytest.mark.parametrize("reopen", [False, True], ids=["in-memory", "reopened"])
def test_search_finds_planted_moment(
    tmp_path: Path, rng: np.random.Generator, keyed: bool, reopen: bool
) -> None:
    store, planted = _planted_store(tmp_path, rng, keyed)
    if reopen:
        store.close()
        store = TokenStore(tmp_path, DIM, budget=100_000, segment_tokens=300, camera="lobby")
    with store:
        moments = store.search(planted)
        best = moments[0]
        assert (best.start, best.end) == (100.0, 105.0)
        assert best.hits == 6
        assert 100.0 <= best.best_time <= 105.0
        assert best.frame_id == 1000 + int(best.best_time)
        assert best.score == pytest.approx(1.0, abs=0.01)
        assert best.camera == "lobby"
        assert best.best_caption == "planted: bag, stationary, left"
        assert best.best_box == (10.0, 20.0, 30.0, 40.0)
        assert best.class_id == 24
        assert best.track_id == 4 + int(best.best_time)
        assert all(m.score < best.score - 0.1 for m in moments[1:])
        assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)


def test_search_range_kinds_and_min_score(tmp_path: Path, rng: np.random.Generator) -> None:
    store, planted = _planted_store(tmp_path, rng, keyed=False)
    with store:
        assert store.search(planted, since=103.0, until=150.0)[0].start == 103.0
        assert store.search(planted, since=0.0, until=104.0)[0].end == 104.0
        outside = store.search(planted, since=110.0)
        assert all(m.start >= 110.0 and m.score < 0.9 for m in outside)
        assert store.search(planted, since=110.0, min_score=0.9) == []
        assert store.search(planted, kinds=[TokenKind.SCENE]) == []
        assert store.search(planted, kinds=[TokenKind.OBJECT])[0].start == 100.0
        assert store.search(planted, since=500.0) == []
        assert len(store.search(planted, limit=2)) <= 2


def test_inverted_range_is_an_error(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM) as store:
        store.append(1.0, 1, dense_batch(rng))
        with pytest.raises(WindowError, match="inverted"):
            store.search(unit(rng, 1)[0], since=10.0, until=5.0)
        with pytest.raises(WindowError, match="dim"):
            store.search(np.ones(DIM + 1, np.float32))


def test_search_while_appending(tmp_path: Path, rng: np.random.Generator) -> None:
    """A searching thread sees a consistent window while segments seal and evict."""
    planted = unit(rng, 1)[0]
    errors: list[BaseException] = []
    stop = threading.Event()
    store = TokenStore(tmp_path, DIM, budget=2000, segment_tokens=200)

    def searcher() -> None:
        try:
            while not stop.is_set():
                for m in store.search(planted, limit=3):
                    assert m.start <= m.best_time <= m.end
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=searcher)
    store.append(0.0, 0, dense_batch(rng))
    thread.start()
    try:
        for t in range(1, 1500):
            keys = [f"k{(t + i) % 300}" for i in range(5)]
            v = unit(np.random.default_rng(t), 5)
            store.append(float(t), t, TokenBatch.create(v, 1, keys=keys))
    finally:
        stop.set()
        thread.join(timeout=30)
        store.close()
    assert not errors, errors


def test_closed_store_refuses_use(tmp_path: Path, rng: np.random.Generator) -> None:
    store = TokenStore(tmp_path, DIM)
    store.close()
    store.close()  # idempotent
    with pytest.raises(WindowError, match="closed"):
        store.append(1.0, 1, dense_batch(rng))
    with pytest.raises(WindowError, match="closed"):
        store.search(unit(rng, 1)[0])


# -- building blocks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vectors": np.zeros(4, np.float32)}, "2-D"),
        ({"vectors": np.full((2, 4), np.nan, np.float32)}, "NaN"),
        ({"keys": ("a",)}, "keys"),
        ({"captions": ("a", "b", "c")}, "captions"),
        ({"boxes": np.zeros((2, 3), np.float32)}, "boxes"),
        ({"kinds": np.zeros(3, np.uint8)}, "kinds"),
    ],
)
def test_token_batch_validation(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "vectors": np.zeros((2, 4), np.float32),
        "keys": (None, None),
        "kinds": np.zeros(2, np.uint8),
        "class_ids": np.full(2, -1),
        "boxes": np.zeros((2, 4)),
        "scores": np.zeros(2),
        "track_ids": np.full(2, -1),
        "captions": ("", ""),
    }
    fields.update(kwargs)
    with pytest.raises(WindowError, match=match):
        TokenBatch(**fields)  # type: ignore[arg-type]


def test_wrong_dim_batch_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    with TokenStore(tmp_path, DIM) as store, pytest.raises(WindowError, match="dim"):
        store.append(1.0, 1, dense_batch(rng, 3, DIM * 2))


@pytest.mark.parametrize("dim", [16, 24, 384, 512])
def test_int8_scores_match_float_reference(rng: np.random.Generator, dim: int) -> None:
    vectors = unit(rng, 777, dim)
    query = unit(rng, 1, dim)[0]
    q, scales = quantise(vectors)
    got = int8_scores(q, scales, Query(query))
    np.testing.assert_allclose(got, vectors @ query, atol=0.02)
    np.testing.assert_allclose(got, _numpy_scores(q, scales, query), atol=0.01)


def test_find_runs_merges_close_hits() -> None:
    ts = np.arange(0.0, 100.0, 0.5)
    scores = np.full(len(ts), 0.1, np.float32)
    scores[(ts >= 10) & (ts <= 12)] = 0.9  # one event
    scores[(ts >= 13.5) & (ts <= 14)] = 0.88  # 1.5 s later: same moment
    scores[(ts >= 50) & (ts <= 51)] = 0.87  # far away: a second moment
    runs = find_runs(ts, scores, limit=10, margin=0.05)
    assert [(ts[r.first], ts[r.last]) for r in runs] == [(10.0, 14.0), (50.0, 51.0)]
    assert runs[0].score == pytest.approx(0.9)
    assert find_runs(ts, scores, limit=10, merge_gap_s=1.0)[0].last == int(12.0 / 0.5)
    assert find_runs(ts, scores, limit=10, min_score=0.95) == []
    assert find_runs(ts, np.full(len(ts), -np.inf, np.float32), limit=10) == []


def test_search_with_a_dim_the_torch_kernel_cannot_take(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    dim = 24  # not a multiple of 16: scored by the numpy path
    planted = unit(rng, 1, dim)[0]
    with TokenStore(tmp_path, dim, budget=10_000, segment_tokens=100) as store:
        for t in range(100):
            v = unit(rng, 4, dim)
            if 40 <= t <= 42:
                v[1] = planted
            store.append(float(t), t, TokenBatch.create(v, TokenKind.TILE))
        best = store.search(planted)[0]
        assert (best.start, best.end) == (40.0, 42.0)
        assert best.score == pytest.approx(1.0, abs=0.01)

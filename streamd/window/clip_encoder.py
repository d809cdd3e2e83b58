"""The `clip` encoder: CLIP or SigLIP image tokens through transformers, text through its tower.

Each analysed frame becomes one token for the whole frame plus one per tile of a `grid`×`grid`
split, all in one batch through the vision tower, so that a bag that is a few pixels of a wide
shot still dominates one tile. Queries go through the text tower; scores are the usual
cosine similarities (≈0.15-0.35 for CLIP, hence a smaller default hit margin than captions).

Loading is transformers' own: `AutoModel.from_pretrained` of a Hub id (downloaded once into the
Hub cache) or of a local directory written by `save_pretrained`; any model with
`get_image_features` and `get_text_features` works (CLIPModel, SiglipModel, …). Pixels are
prepared here with OpenCV rather than by the model's image processor (which needs PIL or
torchvision): each view is letterboxed to the model's square input with the normalisation
mean as padding, then normalised with the mean/std of the model's preprocessor_config.json.
Letterboxing instead of CLIP's centre crop keeps the frame's edges, where people come in.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from streamd.errors import ModelError
from streamd.ingest.frame import Image
from streamd.perception.geometry import Box
from streamd.perception.world import WorldState
from streamd.window.captions import position
from streamd.window.encoders import empty_batch
from streamd.window.store import TokenBatch, TokenKind
from streamd.window.text_embed import quiet_hf_progress

__all__ = ["ClipBackend", "ClipEncoder", "frame_views"]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out: Any) -> Any:
    """The pooled embedding from get_*_features: a tensor (transformers 4) or, in
    transformers 5, a model output whose `pooler_output` holds the projected features."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise ModelError(f"unexpected output from the model's feature function: {type(out).__name__}")


def _normalisation(model: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        from transformers.image_processing_base import ImageProcessingMixin

        cfg, _ = ImageProcessingMixin.get_image_processor_dict(model)
        mean = tuple(float(x) for x in cfg["image_mean"])
        std = tuple(float(x) for x in cfg["image_std"])
        if len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std):
            return mean, std
    except (OSError, KeyError, TypeError, ValueError) as exc:
        log.warning(
            "CLIP model %s: no usable preprocessor_config.json (%s); using OpenAI CLIP's "
            "normalisation",
            model,
            exc,
        )
    return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def frame_views(image: Image, grid: int) -> tuple[list[Image], list[Box], list[str]]:
    """The whole frame, then `grid`×`grid` tiles row by row: views, boxes, captions."""
    h, w = image.shape[:2]
    views, boxes, captions = [image], [Box(0.0, 0.0, float(w), float(h))], ["whole frame"]
    for row in range(grid):
        for col in range(grid):
            x1, x2 = col * w // grid, (col + 1) * w // grid
            y1, y2 = row * h // grid, (row + 1) * h // grid
            box = Box(float(x1), float(y1), float(x2), float(y2))
            views.append(image[y1:y2, x1:x2])
            boxes.append(box)
            captions.append(f"{position(box, w, h)} tile")
    return views, boxes, captions


class ClipBackend:
    """A loaded CLIP-style model shared by every camera; inference is serialised."""

    kind = "clip"
    hit_margin = 0.05

    def __init__(self, model: str, grid: int = 2, device: str = "cpu") -> None:
        quiet_hf_progress()
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        try:
            net = AutoModel.from_pretrained(model)
            self.tokenizer: Any = AutoTokenizer.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load CLIP model {model!r} (a Hub id needs network access once, or "
                f"give a local directory written by save_pretrained): {exc}"
            ) from exc
        if not (hasattr(net, "get_image_features") and hasattr(net, "get_text_features")):
            raise ModelError(
                f"{model!r} loads as {type(net).__name__}, which has no image and text towers; "
                "use a CLIPModel or SiglipModel checkpoint"
            )
        self.model: Any = net.to(device).eval()
        self.device = device
        self.grid = grid
        self.model_id = Path(model).name if Path(model).is_dir() else model
        self.siglip = str(getattr(net.config, "model_type", "")).startswith("siglip")
        vision = getattr(net.config, "vision_config", None)
        self.image_size = int(getattr(vision, "image_size", 224))
        mean, std = _normalisation(model)
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)
        self._pad = tuple(round(255 * m) for m in mean)
        text = getattr(net.config, "text_config", None)
        limit = int(getattr(text, "max_position_embeddings", 77))
        self._max_text = min(limit, int(getattr(self.tokenizer, "model_max_length", limit)))
        self._lock = threading.Lock()
        probe = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        self.dim = int(self.embed_images([probe]).shape[1])
        log.info(
            "CLIP encoder %s: dim %d, input %d px, %d tokens per frame",
            self.model_id,
            self.dim,
            self.image_size,
            1 + grid * grid,
        )

    @property
    def name(self) -> str:
        return f"clip:{self.model_id}"

    def _pixels(self, views: list[Image]) -> Any:
        size = self.image_size
        batch = np.empty((len(views), size, size, 3), np.float32)
        for i, view in enumerate(views):
            h, w = view.shape[:2]
            scale = size / max(h, w, 1)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            rgb = cv2.cvtColor(view, cv2.COLOR_BGR2RGB)
            resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
            canvas = np.empty((size, size, 3), np.uint8)
            canvas[:] = self._pad
            top, left = (size - nh) // 2, (size - nw) // 2
            canvas[top : top + nh, left : left + nw] = resized
            batch[i] = canvas
        batch = (batch / 255.0 - self._mean) / self._std
        return self._torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def _normalised(self, features: Any) -> F32:
        torch = self._torch
        out = torch.nn.functional.normalize(features.float(), dim=-1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def embed_images(self, views: list[Image]) -> F32:
        """L2-normalised image embeddings [len(views), dim] (BGR uint8 views of any size)."""
        pixels = self._pixels(views).to(self.device)
        with self._lock, self._torch.inference_mode():
            return self._normalised(_features(self.model.get_image_features(pixel_values=pixels)))

    def embed_text(self, text: str) -> F32:
        # SigLIP was trained on text padded to max_length and without an attention mask.
        enc = self.tokenizer(
            [text],
            padding="max_length" if self.siglip else True,
            truncation=True,
            max_length=self._max_text,
            return_tensors="pt",
        )
        inputs = {"input_ids": enc["input_ids"].to(self.device)}
        if not self.siglip and "attention_mask" in enc:
            inputs["attention_mask"] = enc["attention_mask"].to(self.device)
        with self._lock, self._torch.inference_mode():
            vectors = self._normalised(_features(self.model.get_text_features(**inputs)))
        return np.asarray(vectors[0], np.float32)

    def for_camera(self, camera: str) -> ClipEncoder:
        return ClipEncoder(self)

    def stats(self) -> dict[str, Any]:
        return {"model": self.model_id, "grid": self.grid, "device": self.device}


@dataclass
class ClipEncoder:
    backend: ClipBackend

    def encode(self, obs: WorldState) -> TokenBatch:
        if not obs.analysed:
            return empty_batch(self.backend.dim)
        views, boxes, captions = frame_views(obs.frame.image, self.backend.grid)
        vectors = self.backend.embed_images(views)
        return TokenBatch.create(
            vectors,
            [TokenKind.GLOBAL] + [TokenKind.TILE] * (len(views) - 1),
            boxes=[(b.x1, b.y1, b.x2, b.y2) for b in boxes],
            captions=captions,
        )

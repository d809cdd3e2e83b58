"""The `transformers` backend: a local image-text-to-text model (Qwen2.5-VL, SmolVLM, LLaVA, …).

Loading is transformers' own: `AutoProcessor` and `AutoModelForImageTextToText` from a Hub id
(downloaded once into the Hub cache) or from a local directory written by `save_pretrained`.
The prompt goes through the processor's chat template with one image part per frame.
Loading and generation run in a worker thread, never on the event loop, one generation at a
time (one model, and CPU generation is already multi-threaded). transformers and torch are
imported only when this backend is used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import cv2

from streamd.errors import ModelError
from streamd.verify.config import TransformersVerifyConfig
from streamd.verify.errors import BackendError
from streamd.verify.prompt import Prompt

__all__ = ["TransformersBackend"]

log = logging.getLogger(__name__)


class _Loaded:
    def __init__(self, processor: Any, model: Any, device: str) -> None:
        self.processor = processor
        self.model = model
        self.device = device


class TransformersBackend:
    """A local VLM; `start()` loads it (in a thread), `judge()` generates (in a thread)."""

    def __init__(self, cfg: TransformersVerifyConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.model)
        self.model_id = path.name if path.is_dir() else cfg.model
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None

    @property
    def name(self) -> str:
        return f"transformers:{self.model_id}"

    def __repr__(self) -> str:
        return f"TransformersBackend(model={self.cfg.model!r}, device={self.cfg.device!r})"

    async def start(self) -> None:
        await asyncio.to_thread(self._ensure_loaded)

    async def judge(self, prompt: Prompt) -> str:
        return await asyncio.to_thread(self._generate, prompt)

    async def aclose(self) -> None:
        self._loaded = None

    def _ensure_loaded(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        from streamd.window.text_embed import quiet_hf_progress

        quiet_hf_progress()
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            processor = AutoProcessor.from_pretrained(self.cfg.model)  # type: ignore[no-untyped-call]
            model = AutoModelForImageTextToText.from_pretrained(self.cfg.model)
        except (OSError, ValueError, ImportError) as exc:
            raise ModelError(
                f"cannot load VLM {self.cfg.model!r} as an image-text-to-text model (a Hub id "
                f"needs network access once, or give a local directory written by "
                f"save_pretrained): {exc}"
            ) from exc
        if getattr(processor, "chat_template", None) is None:
            raise ModelError(
                f"VLM {self.cfg.model!r} has no chat template in its processor; the verifier "
                "needs one to place the frames in the prompt"
            )
        net: Any = model
        net = net.to(device).eval()
        log.info("VLM verifier: %s loaded on %s", self.name, device)
        return _Loaded(processor, net, device)

    def encode(self, prompt: Prompt) -> Any:
        """The processor's model inputs for `prompt`: chat template, image tokens, pixels."""
        loaded = self._ensure_loaded()
        messages = [
            {"role": "system", "content": [{"type": "text", "text": prompt.system}]},
            {
                "role": "user",
                "content": [
                    *({"type": "image"} for _ in prompt.images),
                    {"type": "text", "text": prompt.question},
                ],
            },
        ]
        images = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in prompt.images]
        try:
            text = loaded.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            inputs = loaded.processor(text=[text], images=images, return_tensors="pt")
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise BackendError(f"{self.name}: cannot prepare the prompt: {exc}") from exc
        return inputs.to(loaded.device)

    def _generate(self, prompt: Prompt) -> str:
        import torch

        loaded = self._ensure_loaded()
        inputs = self.encode(prompt)
        try:
            with self._lock, torch.inference_mode():
                out = loaded.model.generate(
                    **inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False
                )
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            reply = loaded.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise BackendError(f"{self.name}: generation failed: {exc}") from exc
        return str(reply)

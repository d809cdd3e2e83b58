"""From a candidate to what the VLM sees: annotated, downsized frames and the chat messages.

The subject's boxes are drawn after downsizing, so the outline stays a few pixels wide however
large the camera's frames are. Both backends start from one `Prompt`: the OpenAI backend sends
the JPEG data URLs, the transformers backend hands the same annotated pixels to its processor.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from streamd.ingest.frame import Image
from streamd.perception.geometry import Box
from streamd.verify.model import Candidate, verdict_schema

__all__ = ["BOX_BGR", "Prompt", "annotate", "build_prompt", "openai_messages", "pick_frames"]

# Pure red outline: rare in scenes, and what VLMs are told to look for in "the red box".
BOX_BGR = (0, 0, 255)
JPEG_QUALITY = 85


@dataclass(frozen=True, slots=True)
class Prompt:
    """What one verification asks: instructions, the question, and the annotated frames."""

    system: str
    question: str
    images: tuple[Image, ...]  # BGR uint8, annotated and downsized

    def jpeg_data_urls(self) -> list[str]:
        return [jpeg_data_url(image) for image in self.images]

    def __repr__(self) -> str:
        sizes = [f"{im.shape[1]}x{im.shape[0]}" for im in self.images]
        return f"Prompt(question={self.question!r}, images={sizes})"


def pick_frames(frames: tuple[Image, ...], count: int) -> list[Image]:
    """`count` frames spread evenly over the segment, first and last included."""
    if len(frames) <= count:
        return list(frames)
    if count == 1:
        return [frames[len(frames) // 2]]
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in idx]


def annotate(image: Image, boxes: tuple[tuple[str, Box], ...], max_side_px: int) -> Image:
    """A downsized copy of `image` with each labelled box outlined in BOX_BGR."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side_px / max(h, w, 1))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    else:
        out = image.copy()
    oh, ow = out.shape[:2]
    thickness = max(2, round(max(oh, ow) / 250))
    for label, box in boxes:
        x1 = int(np.clip(round(box.x1 * scale), 0, ow - 1))
        y1 = int(np.clip(round(box.y1 * scale), 0, oh - 1))
        x2 = int(np.clip(round(box.x2 * scale), 0, ow - 1))
        y2 = int(np.clip(round(box.y2 * scale), 0, oh - 1))
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_BGR, thickness)
        if label:
            font_scale = max(0.4, max(oh, ow) / 1200)
            origin = (x1, max(y1 - 2 * thickness, 12))
            cv2.putText(
                out, label, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, BOX_BGR, 1, cv2.LINE_AA
            )
    return np.ascontiguousarray(out, dtype=np.uint8)


def jpeg_data_url(image: Image) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR image
        raise ValueError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _system_text(camera: str, n_frames: int, has_boxes: bool) -> str:
    subject = (
        "The subject the rule is about is outlined with a labelled red box in each frame. "
        if has_boxes
        else ""
    )
    return (
        "You check alerts raised by a camera monitoring system before anyone is notified. "
        f"You are shown {n_frames} frame(s) from camera {camera!r}, oldest first. {subject}"
        "Decide whether the frames show what the rule describes. Answer false when they do "
        "not clearly show it. Reply with only a JSON object, no other text, matching this "
        f"JSON schema: {json.dumps(verdict_schema(), separators=(',', ':'))}. "
        "`match`: whether the frames show it; `confidence`: your confidence in that answer, "
        "from 0 to 1; `explanation`: one short sentence saying what you see."
    )


def build_prompt(candidate: Candidate, frames: int, max_side_px: int) -> Prompt:
    """The prompt for `candidate`: at most `frames` frames, each at most `max_side_px`."""
    if not candidate.frames:
        raise ValueError(f"candidate for rule {candidate.rule_name!r} carries no frames")
    images = tuple(
        annotate(image, candidate.boxes, max_side_px)
        for image in pick_frames(candidate.frames, frames)
    )
    return Prompt(
        system=_system_text(candidate.camera, len(images), bool(candidate.boxes)),
        question=f"Rule: {candidate.rule_text}\nDo these frames show this?",
        images=images,
    )


def openai_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """Chat-completions messages: the system text, then the question with the frames."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt.question}]
    content.extend(
        {"type": "image_url", "image_url": {"url": url}} for url in prompt.jpeg_data_urls()
    )
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": content},
    ]

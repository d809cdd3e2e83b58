"""Token encoders: an analysed frame in, a `TokenBatch` out; a text in, a query vector out.

Two halves, so that search needs no camera state:
- an `EncoderBackend` holds the model(s), is loaded once and shared by every camera, and
  embeds query text (`embed_text`); its `name` is written into each window's manifest so a
  window is never searched with vectors from another model;
- a `FrameEncoder` per camera (`backend.for_camera`) turns WorldStates into tokens.

Encoders:
- `objects` (default, offline): one token per object in the frame plus one scene token. The
  objects are the detector's detections, moving regions it did not explain and still regions
  (left-object candidates) from the scene model, tracked across frames. Each token's vector is
  the MiniLM embedding of a caption such as "red car, stationary 40 s, right side".
- `clip`: see `clip_encoder`.

Frames the analyser gated as unchanged (`WorldState.analysed` False) produce no tokens: the
previous tokens still describe them, and a static scene must not fill the window.

About the detector's labels: YOLOX-nano knows 80 COCO classes from eye-level photos and is
confidently wrong on unusual views (top-down cars come out as "cell phone" at 0.95). A label
of a thing that cannot move by itself, on an object that is moving with no person near it, is
not believed: such objects, and moving regions the detector did not see at all, get a hedged
caption ("white moving object, maybe a vehicle, person or animal, center") at a lower weight
(`HEDGED_WEIGHT`), so a query for "a car" finds them, ranked below confident detections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from streamd.perception.coco import COCO_CLASSES
from streamd.perception.colours import dominant_colour, person_colour
from streamd.perception.geometry import Box
from streamd.perception.world import TrackKind, TrackState, WorldState
from streamd.window.captions import object_caption, position, scene_caption, unidentified_caption
from streamd.window.store import TokenBatch, TokenKind
from streamd.window.text_embed import TextEmbedder

if TYPE_CHECKING:
    from streamd.config import WindowConfig

__all__ = [
    "HEDGED_WEIGHT",
    "EncoderBackend",
    "FrameEncoder",
    "ObjectsBackend",
    "ObjectsEncoder",
    "empty_batch",
    "load_backend",
]

F32 = npt.NDArray[np.float32]

HEDGED_WEIGHT = 0.75  # vector scale of tokens whose class is a guess (see module doc)

# COCO classes that move by themselves (or carry a person). Anything else that moves is
# being carried, pushed or blown, so it needs a person near it to be believable.
SELF_MOVING = frozenset(
    {
        "person",
        "bicycle",
        "car",
        "motorcycle",
        "airplane",
        "bus",
        "train",
        "truck",
        "boat",
        "bird",
        "cat",
        "dog",
        "horse",
        "sheep",
        "cow",
        "elephant",
        "bear",
        "zebra",
        "giraffe",
    }
)
_CLASS_ID = {name: i for i, name in enumerate(COCO_CLASSES)}


class FrameEncoder(Protocol):
    """One camera's encoder: WorldState → tokens (empty for gated frames)."""

    def encode(self, world: WorldState) -> TokenBatch: ...


class EncoderBackend(Protocol):
    """The shared, loaded model side of an encoder."""

    @property
    def name(self) -> str:
        """Identifies the vector space (model), stored in each window's manifest."""
        ...

    @property
    def kind(self) -> str:
        """The config's encoder name: objects or clip."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def hit_margin(self) -> float:
        """The default search margin suited to this encoder's similarity scale."""
        ...

    def embed_text(self, text: str) -> F32:
        """A query's vector [dim], L2-normalised."""
        ...

    def for_camera(self, camera: str) -> FrameEncoder: ...

    def stats(self) -> dict[str, Any]:
        """Model-level numbers for /api/cameras (e.g. the caption cache)."""
        ...


def empty_batch(dim: int) -> TokenBatch:
    return TokenBatch.create(np.zeros((0, dim), np.float32), TokenKind.SCENE)


@dataclass
class ObjectsParams:
    min_blob_area: float = 0.004  # of the frame: smaller moving regions are limbs and noise
    near_person_widths: float = 0.5  # a carried thing is within this many of its widths
    max_objects: int = 48  # object tokens per frame (plus the scene token)
    # Still objects without a label: the largest few. They are what "something left behind"
    # finds, but the background model can report a dozen where a person stood for a while.
    max_unlabelled_still: int = 3


@dataclass
class ObjectsEncoder:
    """Object + scene tokens for one camera (see module doc), from the world model's tracks:
    nothing is tracked a second time here. Not thread-safe: one writer."""

    embedder: TextEmbedder
    params: ObjectsParams = field(default_factory=ObjectsParams)

    def _tracks(self, world: WorldState) -> list[TrackState]:
        p = self.params
        h, w = world.frame.image.shape[:2]
        frame_area = float(h * w)
        seen = [t for t in world.tracks if t.visible]
        named = sorted((t for t in seen if t.kind is TrackKind.DETECTED), key=lambda t: -t.score)
        blobs = [
            t
            for t in seen
            if t.kind is TrackKind.BLOB and t.box.area / frame_area >= p.min_blob_area
        ]
        still = sorted((t for t in seen if t.kind is TrackKind.OBJECT), key=lambda t: -t.box.area)
        unlabelled = [t for t in still if t.label is None][: p.max_unlabelled_still]
        labelled = [t for t in still if t.label is not None]
        return [*named, *labelled, *blobs, *unlabelled][: p.max_objects]

    def _believable(self, track: TrackState, people: Sequence[Box]) -> bool:
        label = track.label
        if label is None:
            return False
        if label in SELF_MOVING or not track.moving:
            return True
        box = track.box
        reach = self.params.near_person_widths * max(box.width, box.height)
        return any(box.gap(q) <= reach for q in people)

    def encode(self, world: WorldState) -> TokenBatch:
        if not world.analysed:
            return empty_batch(self.embedder.dim)
        tracks = self._tracks(world)
        image = world.frame.image
        h, w = image.shape[:2]
        people = [t.box for t in tracks if t.label == "person"]
        captions: list[str] = []
        weights: list[float] = []
        class_ids: list[int] = []
        boxes: list[tuple[float, float, float, float]] = []
        scores: list[float] = []
        track_ids: list[int] = []
        counts: Counter[str] = Counter()
        for track in tracks:
            box = track.box
            where = position(box, w, h)
            still = track.stationary_for(world.ts)
            label = track.label
            colour = track.colour
            if label is not None and self._believable(track, people):
                if colour is None:
                    colour = (person_colour if label == "person" else dominant_colour)(image, box)
                captions.append(object_caption(label, colour, track.moving, still, where))
                weights.append(1.0)
                class_ids.append(_CLASS_ID.get(label, -1))
                counts[label] += 1
            else:
                if colour is None or label == "person":
                    colour = dominant_colour(image, box)
                captions.append(unidentified_caption(colour, track.moving, still, where))
                weights.append(HEDGED_WEIGHT)
                class_ids.append(-1)
                if track.moving:
                    counts["moving object"] += 1
            boxes.append((box.x1, box.y1, box.x2, box.y2))
            scores.append(track.score)
            track_ids.append(track.track_id)
        captions.append(scene_caption(counts, world.brightness))
        weights.append(1.0)
        vectors = self.embedder.embed(captions) * np.asarray(weights, np.float32)[:, None]
        n_obj = len(captions) - 1
        return TokenBatch.create(
            vectors,
            [TokenKind.OBJECT] * n_obj + [TokenKind.SCENE],
            # The weight is part of what a key stands for: the store keeps one vector per key.
            keys=[
                c if wt == 1.0 else f"{c}|w{wt:g}" for c, wt in zip(captions, weights, strict=True)
            ],
            class_ids=[*class_ids, -1],
            boxes=np.asarray([*boxes, (0.0, 0.0, 0.0, 0.0)], np.float32),
            scores=[*scores, 0.0],
            track_ids=[*track_ids, -1],
            captions=captions,
        )


class ObjectsBackend:
    """The objects encoder's shared part: the caption/query text model."""

    kind = "objects"
    # Caption cosines for one class vary by ≈0.1 with colour and state, and a hedged token of
    # the same thing scores ≈0.25 below a confident one: both belong in the answer.
    hit_margin = 0.3

    def __init__(self, embedder: TextEmbedder) -> None:
        self.embedder = embedder

    @property
    def name(self) -> str:
        return f"objects:{self.embedder.name}"

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def embed_text(self, text: str) -> F32:
        return self.embedder.embed_query(text)

    def for_camera(self, camera: str) -> ObjectsEncoder:
        return ObjectsEncoder(self.embedder)

    def stats(self) -> dict[str, Any]:
        return {"text_model": self.embedder.name, "text_cache": self.embedder.stats().as_dict()}


def load_backend(cfg: WindowConfig) -> EncoderBackend:
    """Load the configured encoder's model(s) (blocking: seconds; call from a thread)."""
    if cfg.encoder == "clip":
        from streamd.window.clip_encoder import ClipBackend

        return ClipBackend(cfg.clip.model, grid=cfg.clip.grid, device=cfg.clip.device)
    return ObjectsBackend(TextEmbedder(cfg.text_model, cache_size=cfg.text_cache))

"""What the rules stage hands to the events stage: one change in an event's life."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamd.ingest.frame import Image
from streamd.perception.geometry import Box

ChangeKind = Literal["new", "update", "end"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_event_id(start_time: float) -> str:
    """Frigate-style id: `<start epoch>-<6 random chars>`."""
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    return f"{start_time:.6f}-{suffix}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The frame that opened an event and the boxes to draw on it (label, box), plus the last
    few frames before it (what a VLM verifier is shown)."""

    image: Image
    boxes: tuple[tuple[str, Box], ...] = ()
    evidence: tuple[Image, ...] = ()


@dataclass(frozen=True, slots=True)
class EventChange:
    """One transition of an event: `new` when a rule starts holding, `update`, `end`.

    Times are UTC epoch seconds taken from the frames' receive time.
    """

    kind: ChangeKind
    event_id: str
    camera: str
    rule_name: str
    rule_text: str
    start_time: float
    end_time: float | None
    score: float
    top_score: float
    snapshot: Snapshot | None = None
    description: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class PendingChange(BaseModel):
    """An event change ready for the log: its snapshot already on disk, its details plain JSON.

    This is what waits in the event writer's buffer and journal while the database is away, so
    it holds no image (the JPEG is written first) and survives a JSON round trip unchanged.
    """

    # NaN/inf scores stay what they were through the journal instead of becoming null.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    kind: ChangeKind
    event_id: str
    camera: str
    rule_name: str
    rule_text: str
    severity: str = "warning"
    start_time: float
    end_time: float | None
    score: float
    top_score: float
    description: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    instance: str | None = Field(None, description="The instance that analysed the camera.")
    snapshot: str | None = Field(
        None, description="Snapshot path relative to the snapshot directory, if one was written."
    )

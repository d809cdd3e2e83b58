"""The MQTT message contract: Frigate-style event envelopes on `<prefix>/events`.

Field names and meanings are public (docs/design.md, "Public contract"): Home Assistant blueprints
and notifiers written for Frigate read `type`, `before`/`after`, `id`, `camera`, `label`,
`start_time`, `end_time`, `score`, `top_score`, `has_snapshot`, `frame_time`, `current_zones`,
`entered_zones`, `sub_label` and `false_positive`. New fields may be added; none may be renamed or
change meaning.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EnvelopeType = Literal["new", "update", "end"]


class EventSide(BaseModel):
    """The state of one event, as `before` or `after` a change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description='"<start epoch>-<6 random chars>"')
    camera: str = Field(description="Camera name.")
    label: str = Field(description="The rule's name (Frigate puts the object label here).")
    rule: str = Field(description="The rule's text.")
    start_time: float = Field(description="UTC epoch seconds when the rule started holding.")
    end_time: float | None = Field(description="UTC epoch seconds it ended; null while active.")
    score: float = Field(description="Latest score of the rule.")
    top_score: float = Field(description="Highest score seen during the event.")
    has_snapshot: bool = Field(description="Whether a snapshot JPEG exists for the event.")
    description: str | None = Field(None, description="VLM verdict or explanation, if any.")
    severity: str = Field("warning", description="The rule's severity: info, warning, critical.")
    snapshot_url: str | None = Field(None, description="HTTP URL of the snapshot, if known.")
    # Fields Frigate recipes read. Their values are honest, not placeholders that mimic Frigate:
    # zones are not tracked per event yet (empty lists), nothing is ever reclassified.
    frame_time: float = Field(
        description="UTC epoch seconds of the newest observation behind this state: the end "
        "time once ended, otherwise when the change was recorded."
    )
    current_zones: list[str] = Field(
        default_factory=list,
        description="Zones the event's object is in now (empty for scene-level events).",
    )
    entered_zones: list[str] = Field(
        default_factory=list, description="Zones the event's object was in since it started."
    )
    sub_label: str | None = Field(None, description="Finer label; streamd sets none.")
    false_positive: bool = Field(
        False, description="Always false: an event streamd publishes is one it stands by."
    )
    instance: str | None = Field(
        None, description="The streamd instance that analysed the camera (instance.name)."
    )


class EventEnvelope(BaseModel):
    """One message on `<prefix>/events`. For `new`, `before` equals `after` (as Frigate does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EnvelopeType
    before: EventSide
    after: EventSide

    def to_json(self) -> str:
        return self.model_dump_json()

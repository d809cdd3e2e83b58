"""The `rules:` section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from streamd.config.base import NAME_RE, CameraName, StrictModel


class RuleConfig(StrictModel):
    name: str = Field(
        pattern=NAME_RE.pattern, description="Short id: lowercase letters, digits, - and _."
    )
    text: str = Field(min_length=3, max_length=1000, description="The rule in plain language.")
    cameras: list[CameraName] | None = Field(
        None, max_length=1000, description="Cameras it applies to (default all)."
    )
    cooldown_s: float = Field(
        30.0, ge=0, le=7 * 86400, description="Quiet time after an event ends (at most 7 days)."
    )
    clear_s: float = Field(
        4.0,
        ge=0,
        le=86400,
        description="How long the rule must stop holding before its event ends (at most a day).",
    )
    severity: Literal["info", "warning", "critical"] = "warning"

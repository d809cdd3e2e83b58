"""The `rules:` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from streamd.config.base import NAME_RE, CameraName, StrictModel
from streamd.verify.config import RuleVerifyConfig


class RuleConfig(StrictModel):
    name: str = Field(
        pattern=NAME_RE.pattern, description="Short id: lowercase letters, digits, - and _."
    )
    text: str = Field(
        min_length=3,
        max_length=1000,
        description="The rule in plain language (with `ir`: optional, defaults to its words).",
    )
    ir: dict[str, Any] | None = Field(
        None, description="The rule written as its IR (structured YAML) instead of text."
    )
    verify: RuleVerifyConfig = Field(
        default_factory=RuleVerifyConfig, description="VLM verification of this rule's events."
    )
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

    @model_validator(mode="before")
    @classmethod
    def _text_from_ir(cls, data: Any) -> Any:
        """A structured rule is checked here (naming the bad key) and gets its words as text."""
        if isinstance(data, dict) and data.get("ir") is not None:
            from streamd.errors import RuleCompileError
            from streamd.rules.ir import parse_ir
            from streamd.rules.words import describe

            try:
                ir = parse_ir(data["ir"])
            except RuleCompileError as exc:
                raise ValueError(str(exc)) from None
            if not data.get("text"):
                data = {**data, "text": describe(ir.root)}
        return data

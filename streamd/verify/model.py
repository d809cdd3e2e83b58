"""What goes into and comes out of the verifier, and the verdict the VLM must write.

`Candidate` is built by the rules stage from a segment; `VerifyResult` travels on to events
(stored with the event, summarised into the MQTT payload's `description`). `VlmVerdict` is the
JSON object the model is asked for; its schema goes into the request and `parse_verdict` reads
it back from what models really write (bare JSON, JSON in ``` fences, JSON after a preamble).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamd.ingest.frame import Image
from streamd.perception.geometry import Box
from streamd.verify.errors import VerdictParseError

__all__ = [
    "Candidate",
    "Verdict",
    "VerifyResult",
    "VlmVerdict",
    "parse_verdict",
    "response_format",
]

Verdict = Literal["confirmed", "rejected", "unverified"]

_EXCERPT = 160


@dataclass(frozen=True, slots=True)
class Candidate:
    """A would-be event: a few BGR frames of its segment and the subject's boxes on them."""

    camera: str
    rule_name: str
    rule_text: str
    ts: float
    frames: tuple[Image, ...]
    boxes: tuple[tuple[str, Box], ...] = ()

    def __repr__(self) -> str:
        # The default repr would print whole pixel arrays into logs.
        return (
            f"Candidate(camera={self.camera!r}, rule_name={self.rule_name!r}, ts={self.ts}, "
            f"frames={len(self.frames)}, boxes={[label for label, _ in self.boxes]})"
        )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verifier's answer for one candidate, after the rule's failure policy was applied."""

    verdict: Verdict
    confidence: float | None
    explanation: str
    backend: str
    latency_s: float
    error: str | None = None

    @property
    def description(self) -> str:
        """One line for the event's `description`: verdict, confidence, explanation or error."""
        head: str = self.verdict
        if self.confidence is not None:
            head += f" ({self.confidence:.2f})"
        tail = self.explanation or (self.error or "")
        if self.error and self.explanation:
            tail = f"{self.explanation} [{self.error}]"
        return f"{head}: {tail}" if tail else head

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form stored with the event."""
        return {
            "verdict": self.verdict,
            "confidence": self.confidence,
            "explanation": self.explanation,
            "backend": self.backend,
            "latency_s": round(self.latency_s, 3),
            "error": self.error,
        }


class VlmVerdict(BaseModel):
    """The JSON object the VLM is asked to reply with."""

    # Models add fields of their own ("reasoning", …); those are ignored, not fatal.
    model_config = ConfigDict(extra="ignore", frozen=True)

    match: bool = Field(description="true only if the frames clearly show what the rule describes")
    confidence: float = Field(ge=0.0, le=1.0, description="confidence in `match`, from 0 to 1")
    explanation: str = Field(description="one short sentence: what the frames show")


def verdict_schema() -> dict[str, Any]:
    """The verdict's JSON schema, closed (no other keys) as strict structured output wants."""
    schema = VlmVerdict.model_json_schema()
    schema["additionalProperties"] = False
    return schema


def response_format() -> dict[str, Any]:
    """OpenAI chat-completions `response_format` asking for a `VlmVerdict`."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "strict": True, "schema": verdict_schema()},
    }


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in `text`, in order: the whole text, fenced blocks, then any `{…}`."""
    found: list[dict[str, Any]] = []
    chunks = [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for chunk in chunks:
        try:
            value = json.loads(chunk)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
    decoder = json.JSONDecoder()
    start = text.find("{")
    # Bounded: each step moves past at least one '{'.
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        start = text.find("{", end)
    return found


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[:_EXCERPT] + "…"


def parse_verdict(text: str) -> VlmVerdict:
    """The first JSON object in the reply that is a valid verdict; VerdictParseError otherwise."""
    objects = _json_objects(text)
    if not objects:
        raise VerdictParseError(f"the model's reply holds no JSON object: {_excerpt(text)!r}")
    problems: list[str] = []
    for obj in objects:
        try:
            return VlmVerdict.model_validate(obj)
        except ValidationError as exc:
            problems.extend(
                f"{'.'.join(str(p) for p in err['loc']) or 'verdict'}: {err['msg']}"
                for err in exc.errors()
            )
    raise VerdictParseError(
        "the model's reply holds JSON but no valid verdict "
        f"({'; '.join(dict.fromkeys(problems))}): {_excerpt(text)!r}"
    )

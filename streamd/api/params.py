"""Parameter types with their constraints declared, so they reach the OpenAPI schema and a bad
value is a 422 naming the parameter before any handler runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from streamd.config import NAME_RE

# Event ids are "<start epoch>-<6 random chars>"; the same characters as snapshot file names.
EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# Printable text only: a NUL byte or control character in a query is never meaningful.
TIME_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
TIME_HELP = "ISO 8601 (2026-11-25T14:00:00Z), epoch seconds, or a span ago (90s, 15m, 2h, 1d)"

CameraQuery = Annotated[str | None, Query(pattern=NAME_RE.pattern, description="Only this camera.")]
RuleQuery = Annotated[
    str | None, Query(pattern=NAME_RE.pattern, description="Only this rule (its name).")
]
SinceQuery = Annotated[
    str | None, Query(pattern=TIME_PATTERN, description=f"Start at or after: {TIME_HELP}.")
]
UntilQuery = Annotated[
    str | None, Query(pattern=TIME_PATTERN, description=f"Start before: {TIME_HELP}.")
]
EventId = Annotated[str, Path(pattern=EVENT_ID_PATTERN, description="An event id.")]
CameraPath = Annotated[str, Path(pattern=NAME_RE.pattern, description="A camera name.")]
RuleName = Annotated[str, Path(pattern=NAME_RE.pattern, description="A rule name.")]

"""The `site:` section and the per-camera geometry (zones and directed lines) rules refer to."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from streamd.config.base import StrictModel

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PointConfig = tuple[Fraction, Fraction]


class LineConfig(StrictModel):
    """A directed line: crossing from the left of from→to to its right (on screen) is "in"."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True
    )

    start: PointConfig = Field(alias="from", description="[x, y] as fractions of the frame.")
    end: PointConfig = Field(alias="to", description="[x, y] as fractions of the frame.")

    @model_validator(mode="after")
    def _length(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError("a line needs two different points")
        return self


def _polygon(points: list[PointConfig]) -> list[PointConfig]:
    if len(points) < 3:
        raise ValueError(f"a zone needs at least 3 points, got {len(points)}")
    return points


ZoneName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_ -]{0,63}$")]
ZonePolygon = Annotated[list[PointConfig], AfterValidator(_polygon)]


class SiteConfig(StrictModel):
    timezone: str | None = Field(
        None, description="IANA time zone for clock times in rules; default: the host's."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)"
            raise ValueError(msg) from None
        return v

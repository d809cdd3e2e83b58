"""What every config section shares: strict frozen models and the name pattern."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class StrictModel(BaseModel):
    # allow_inf_nan=False: "NaN" or "1e400" in YAML or JSON would pass every ge/le bound check
    # (comparisons with NaN are false, inf passes ge) and break arithmetic far from the input.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


CameraName = Annotated[str, Field(pattern=NAME_RE.pattern)]

"""The `inference:` section: the worker pool every camera's analysis shares."""

from __future__ import annotations

from pydantic import Field

from streamd.config.base import StrictModel


class InferenceConfig(StrictModel):
    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Analysis worker threads shared by all cameras (default: one per core).",
    )
    detector_threads: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "ONNX Runtime threads per detector call. Keep workers × detector_threads at or "
            "below the core count: more only makes the threads fight over the cores."
        ),
    )

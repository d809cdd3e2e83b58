"""The `model:` section: the object detector."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from streamd.config.base import StrictModel

DEFAULT_DETECTOR_URL = (
    "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx"
)


class DetectorConfig(StrictModel):
    path: Path | None = Field(None, description="Local YOLOX-nano ONNX file.")
    url: str | None = Field(
        DEFAULT_DETECTOR_URL, description="Where to fetch the model when path is absent."
    )
    sha256: str | None = Field(None, description="Expected checksum (default: the release file).")
    score_threshold: float = Field(0.35, gt=0, lt=1, description="Minimum detection score.")


class ModelConfig(StrictModel):
    detector: DetectorConfig = Field(default_factory=DetectorConfig)

"""The `model:` section: the object detector."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

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
    weak_threshold: float | None = Field(
        0.1,
        gt=0,
        lt=1,
        description="People scored from this up to score_threshold are kept as weak boxes: "
        "never a person of their own, only to keep someone already tracked whom the detector "
        "just lost (a body on the floor scores low). null turns this off.",
    )
    runtime: Literal["auto", "onnxruntime", "opencv"] = Field(
        "auto", description="ONNX Runtime where installed (auto), or OpenCV DNN."
    )
    providers: list[str] | None = Field(
        None,
        description="ONNX Runtime execution providers in order of preference, e.g. "
        "[CUDAExecutionProvider, CPUExecutionProvider]; those this machine lacks are skipped "
        "with a warning, CPU is the fallback.",
    )

    @model_validator(mode="after")
    def _weak_below_threshold(self) -> DetectorConfig:
        if self.weak_threshold is not None and self.weak_threshold >= self.score_threshold:
            raise ValueError(
                f"weak_threshold ({self.weak_threshold}) must be below score_threshold "
                f"({self.score_threshold}), or null"
            )
        return self

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not name.endswith("ExecutionProvider") or not name.isalnum():
                raise ValueError(
                    f"{name!r} is not an ONNX Runtime execution provider name "
                    "(such as CUDAExecutionProvider or CPUExecutionProvider)"
                )
        return value


class ModelConfig(StrictModel):
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    pose: Literal["auto", "mediapipe", "off"] = Field(
        "auto",
        description="Pose estimator for postures a person's box leaves open (someone lying "
        "with their head towards the camera is boxed like someone seated): MediaPipe 0.10.21 "
        "where installed (auto; scripts/install-pose), required (mediapipe), or boxes only.",
    )

    @field_validator("pose")
    @classmethod
    def _pose_installed(cls, value: str) -> str:
        if value == "mediapipe" and importlib.util.find_spec("mediapipe") is None:
            raise ValueError(
                "'mediapipe' needs mediapipe 0.10.21, which is not installed: run "
                "scripts/install-pose, or set auto (pose where installed) or off"
            )
        return value

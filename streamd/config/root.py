"""The whole configuration: every section, and the checks that span sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from streamd.config.api import ApiConfig
from streamd.config.base import CameraName, StrictModel
from streamd.config.camera import CameraConfig
from streamd.config.cluster import ClusterConfig, InstanceConfig
from streamd.config.database import DatabaseConfig
from streamd.config.inference import InferenceConfig
from streamd.config.model import ModelConfig
from streamd.config.mqtt import MqttConfig
from streamd.config.retention import RetentionConfig
from streamd.config.rules import RuleConfig
from streamd.config.site import SiteConfig
from streamd.config.webrtc import WebRtcConfig
from streamd.config.window import WindowConfig
from streamd.verify.config import VerifyConfig


class Config(StrictModel):
    data_dir: Path = Field(Path("streamd-data"), description="Snapshots and window segments.")
    segment_s: float = Field(2.0, gt=0, le=60, description="Rules are evaluated per segment.")
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: MqttConfig | None = Field(None, description="MQTT broker; absent: no MQTT.")
    api: ApiConfig = Field(default_factory=ApiConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    inference: InferenceConfig = Field(
        default_factory=InferenceConfig, description="The analysis worker pool."
    )
    window: WindowConfig = Field(
        default_factory=WindowConfig, description="Token window and search settings."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    webrtc: WebRtcConfig = Field(
        default_factory=WebRtcConfig, description="WebRTC (WHIP/WHEP) settings."
    )
    site: SiteConfig = Field(default_factory=SiteConfig)
    verify: VerifyConfig | None = Field(
        None, description="A VLM that confirms candidate events; absent: no verification."
    )
    instance: InstanceConfig = Field(
        default_factory=InstanceConfig, description="This daemon's name among instances."
    )
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig, description="Camera leases (PostgreSQL only)."
    )
    cameras: dict[CameraName, CameraConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            for cam in rule.cameras or ():
                if cam not in self.cameras:
                    raise ValueError(f"rule {rule.name!r} names unknown camera {cam!r}")
        return self

    def rules_for(self, camera: str) -> list[RuleConfig]:
        return [r for r in self.rules if r.cameras is None or camera in r.cameras]

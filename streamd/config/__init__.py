"""Configuration: YAML → pydantic v2 models, one module per section.

Unknown keys are errors that name the key and line; see `loader` for what else a file is refused
for. Secrets never need to live in the file: any string value may contain `${ENV_VAR}`, expanded at
load time, and `mqtt.password` / `api.token` fall back to STREAMD_MQTT_PASSWORD /
STREAMD_API_TOKEN. `secrets` masks them in every message.
"""

from streamd.config.api import ApiConfig
from streamd.config.base import NAME_RE, CameraName, StrictModel
from streamd.config.camera import CameraConfig
from streamd.config.cluster import ClusterConfig, InstanceConfig
from streamd.config.database import DatabaseConfig
from streamd.config.inference import InferenceConfig
from streamd.config.loader import load_config, parse_config, read_config_text
from streamd.config.model import DEFAULT_DETECTOR_URL, DetectorConfig, ModelConfig
from streamd.config.mqtt import MqttConfig
from streamd.config.retention import RetentionConfig
from streamd.config.root import Config
from streamd.config.rules import RuleConfig
from streamd.config.secrets import SecretScrubber, redact_text, redact_url
from streamd.config.site import LineConfig, PointConfig, SiteConfig
from streamd.config.webrtc import IceServerConfig, WebRtcConfig, WhepConfig
from streamd.config.window import ClipEncoderConfig, WindowConfig

__all__ = [
    "DEFAULT_DETECTOR_URL",
    "NAME_RE",
    "ApiConfig",
    "CameraConfig",
    "CameraName",
    "ClipEncoderConfig",
    "ClusterConfig",
    "Config",
    "DatabaseConfig",
    "DetectorConfig",
    "IceServerConfig",
    "InferenceConfig",
    "InstanceConfig",
    "LineConfig",
    "ModelConfig",
    "MqttConfig",
    "PointConfig",
    "RetentionConfig",
    "RuleConfig",
    "SecretScrubber",
    "SiteConfig",
    "StrictModel",
    "WebRtcConfig",
    "WhepConfig",
    "WindowConfig",
    "load_config",
    "parse_config",
    "read_config_text",
    "redact_text",
    "redact_url",
]

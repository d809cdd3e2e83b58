"""The `mqtt:` section."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr, field_validator, model_validator

from streamd.config.base import StrictModel


class MqttConfig(StrictModel):
    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic_prefix: str = Field("streamd", description="Prefix of every topic streamd publishes.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(
        None, description="Broker password; default from STREAMD_MQTT_PASSWORD."
    )
    tls: bool = Field(False, description="Connect with TLS (system CA store).")
    client_id: str | None = Field(None, description="MQTT client id; default streamd-<prefix>.")
    discovery: bool = Field(True, description="Publish Home Assistant discovery configs.")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery prefix.")
    required: bool = Field(
        True,
        description="When false and no broker answers at start, run without MQTT (SQL and log "
        "only) instead of retrying in the background.",
    )
    stats_interval_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Interval of `<prefix>/stats` and of the retained `<prefix>/<camera>/status` "
        "(a camera going on- or offline is published within 5 s regardless).",
    )

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"invalid MQTT topic prefix {v!r}: no wildcards or edge slashes")
        return v

    @model_validator(mode="after")
    def _password_from_env(self) -> MqttConfig:
        if self.password is None and os.environ.get("STREAMD_MQTT_PASSWORD"):
            object.__setattr__(self, "password", SecretStr(os.environ["STREAMD_MQTT_PASSWORD"]))
        return self

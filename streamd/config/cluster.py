"""The `instance:` and `cluster:` sections: who this daemon is among several sharing a database."""

from __future__ import annotations

import re
import socket

from pydantic import Field, model_validator

from streamd.config.base import NAME_RE, StrictModel

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def default_instance_name() -> str:
    """The host name made safe for topics and SQL (`Web-1.lan` → `web-1-lan`)."""
    name = _UNSAFE.sub("-", socket.gethostname().lower()).strip("-_")[:63]
    return name if NAME_RE.match(name) else "streamd"


class InstanceConfig(StrictModel):
    name: str = Field(
        default_factory=default_instance_name,
        pattern=NAME_RE.pattern,
        description="This daemon's name in events, MQTT topics and camera leases: lower-case "
        "letters, digits, '-' and '_' (default: the host name made safe). Names must be "
        "unique among instances sharing one database.",
    )


class ClusterConfig(StrictModel):
    """Camera leases in PostgreSQL (ignored on SQLite, where every camera is local)."""

    lease_ttl_s: float = Field(
        15.0,
        ge=1.0,
        le=600.0,
        description="A camera lease not renewed for this long is free for another instance; "
        "an instance cut off from the database stops its cameras when its leases run out.",
    )
    renew_s: float = Field(
        5.0, gt=0, le=200.0, description="How often leases and the heartbeat are renewed."
    )

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> ClusterConfig:
        if self.renew_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"cluster.renew_s ({self.renew_s:g}) must be at most half of cluster.lease_ttl_s "
                f"({self.lease_ttl_s:g}), or a single late renewal loses every camera"
            )
        return self

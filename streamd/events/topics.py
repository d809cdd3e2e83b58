"""MQTT topic names and state payloads (public contract: docs/design.md, "Public contract").

Camera and rule names are restricted to `[a-z0-9][a-z0-9_-]*` by the config, so no name can add
a level or a wildcard to a topic. Home Assistant's discovery topics and ids (collision-proof)
are built in `streamd.events.discovery`.
"""

from __future__ import annotations

# Payloads of the retained state topics.
STATE_ON = "ON"
STATE_OFF = "OFF"


def events_topic(prefix: str) -> str:
    return f"{prefix}/events"


def state_topic(prefix: str, camera: str, rule: str) -> str:
    return f"{prefix}/{camera}/{rule}/state"


def availability_topic(prefix: str) -> str:
    return f"{prefix}/available"


def database_topic(prefix: str) -> str:
    """Retained JSON: whether the event database is reachable (see events/writer.py)."""
    return f"{prefix}/database"


def stats_topic(prefix: str) -> str:
    return f"{prefix}/stats"


def camera_status_topic(prefix: str, camera: str) -> str:
    return f"{prefix}/{camera}/status"


def camera_snapshot_topic(prefix: str, camera: str) -> str:
    return f"{prefix}/{camera}/snapshot"


def instance_availability_topic(prefix: str, instance: str) -> str:
    """`online` / `offline` of one instance (retained, its Last Will), beside `available`."""
    return f"{prefix}/instance/{instance}/available"

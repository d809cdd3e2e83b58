"""MQTT topic names (public contract, docs/design.md). Camera and rule names are restricted to
`[a-z0-9][a-z0-9_-]*` by the config, so no name can add a level or a wildcard to a topic."""

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


def stats_topic(prefix: str) -> str:
    return f"{prefix}/stats"


def camera_status_topic(prefix: str, camera: str) -> str:
    return f"{prefix}/{camera}/status"


def camera_snapshot_topic(prefix: str, camera: str) -> str:
    return f"{prefix}/{camera}/snapshot"

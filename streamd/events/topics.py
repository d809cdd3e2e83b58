"""MQTT topic names and state payloads (public contract: docs/design.md, "Public contract")."""

from __future__ import annotations

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

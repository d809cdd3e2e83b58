"""Home Assistant MQTT discovery: one device per camera, a binary_sensor per (camera, rule).

Entity ids must never collide. Camera and rule names may both contain `_`, so joining them
(`front_door` + `person` vs `front` + `door_person`) is ambiguous; every rule entity's id ends
with a short hash of the exact pair, which keeps it readable and unique. A second daemon on the
same broker (another topic prefix) gets its own node id, so the two never overwrite each other.

Discovery topics are `<discovery_prefix>/<component>/<node>/<object>/config`, retained. An empty
retained payload on a config topic removes the entity (see the MQTT integration's docs).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamd import __version__
from streamd.config import ApiConfig, MqttConfig
from streamd.events.topics import (
    STATE_OFF,
    STATE_ON,
    availability_topic,
    camera_snapshot_topic,
    camera_status_topic,
    state_topic,
)

ONLINE = "online"
OFFLINE = "offline"

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")

Message = tuple[str, str]


def safe_id(name: str) -> str:
    return _UNSAFE_ID_CHARS.sub("_", name)


def _digest(*parts: str) -> str:
    # "\0" cannot occur in a name or prefix, so distinct tuples never hash the same input.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def node_id(prefix: str) -> str:
    """The Home Assistant node of one daemon: `streamd` for the default topic prefix."""
    if prefix == "streamd":
        return "streamd"
    node = f"streamd_{safe_id(prefix)}"
    # "a/b" and "a_b" would otherwise share a node.
    return node if safe_id(prefix) == prefix else f"{node}_{_digest(prefix)}"


def api_base_url(api: ApiConfig) -> str | None:
    """The HTTP API's base URL as others can reach it (`api.base_url`), or None when it is off."""
    return api.base_url if api.enabled else None


@dataclass(frozen=True, slots=True)
class CameraDevice:
    """What Home Assistant shows about one camera's device."""

    name: str
    model: str = "camera"


class Discovery:
    """Builds the discovery messages of one daemon (pure: no I/O)."""

    def __init__(
        self, cfg: MqttConfig, *, base_url: str | None = None, sw_version: str = __version__
    ) -> None:
        self.prefix = cfg.topic_prefix
        self.discovery_prefix = cfg.discovery_prefix
        self.node = node_id(self.prefix)
        self.base_url = base_url
        self.sw_version = sw_version

    # -- ids and topics --------------------------------------------------------------------

    def rule_object_id(self, camera: str, rule: str) -> str:
        return f"{safe_id(camera)}_{safe_id(rule)}_{_digest(camera, rule)}"

    def camera_object_id(self, camera: str, kind: str) -> str:
        # `kind` is one of a few fixed words, none of which looks like a rule entity's hash.
        return f"{safe_id(camera)}_{kind}"

    def config_topic(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def node_config_filter(self) -> str:
        """Subscription filter matching every config of this daemon's node."""
        return f"{self.discovery_prefix}/+/{self.node}/+/config"

    def stale_removal(self, config_topic: str, config: str) -> list[Message]:
        """Empty retained payloads for a config this daemon no longer announces, and for the
        retained topics under its own prefix that the config read (state, status, snapshot)."""
        messages: list[Message] = [(config_topic, "")]
        try:
            doc = json.loads(config)
        except ValueError:
            return messages
        if not isinstance(doc, dict):
            return messages
        for key in ("state_topic", "image_topic"):
            topic = doc.get(key)
            # A camera's status feeds two entities: clear it once.
            ours = isinstance(topic, str) and topic.startswith(f"{self.prefix}/")
            if ours and (topic, "") not in messages:
                messages.append((str(topic), ""))
        return messages

    def rule_config_topic(self, camera: str, rule: str) -> str:
        return self.config_topic("binary_sensor", self.rule_object_id(camera, rule))

    def legacy_config_topic(self, camera: str, rule: str) -> str:
        """Where streamd ≤ 0.1 put a rule's config (ids that could collide)."""
        return (
            f"{self.discovery_prefix}/binary_sensor/"
            f"{self.node}_{safe_id(camera)}_{safe_id(rule)}/config"
        )

    # -- payloads --------------------------------------------------------------------------

    def _device(self, camera: CameraDevice) -> dict[str, Any]:
        device: dict[str, Any] = {
            "identifiers": [f"{self.node}_{safe_id(camera.name)}"],
            "name": camera.name,
            "manufacturer": "streamd",
            "model": camera.model,
            "sw_version": self.sw_version,
        }
        if self.base_url:
            device["configuration_url"] = f"{self.base_url}/api/cameras"
        return device

    def _common(self, object_id: str, camera: CameraDevice) -> dict[str, Any]:
        unique = f"{self.node}_{object_id}"
        return {
            "unique_id": unique,
            "object_id": unique,
            "availability_topic": availability_topic(self.prefix),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self._device(camera),
            "origin": {"name": "streamd", "sw_version": self.sw_version},
        }

    def rule_entity(self, camera: CameraDevice, rule: str) -> Message:
        """The binary_sensor that is ON while `rule` holds on `camera`."""
        object_id = self.rule_object_id(camera.name, rule)
        config = {
            "name": rule,
            **self._common(object_id, camera),
            "state_topic": state_topic(self.prefix, camera.name, rule),
            "payload_on": STATE_ON,
            "payload_off": STATE_OFF,
            "device_class": "problem",
        }
        return self.config_topic("binary_sensor", object_id), _dump(config)

    def camera_entities(self, camera: CameraDevice) -> list[Message]:
        """The camera's latest snapshot (image), its online state and its analysed fps."""
        status = camera_status_topic(self.prefix, camera.name)
        image_id = self.camera_object_id(camera.name, "snapshot")
        online_id = self.camera_object_id(camera.name, "online")
        fps_id = self.camera_object_id(camera.name, "analysed_fps")
        image = {
            "name": "snapshot",
            **self._common(image_id, camera),
            "image_topic": camera_snapshot_topic(self.prefix, camera.name),
            "content_type": "image/jpeg",
        }
        online = {
            "name": "online",
            **self._common(online_id, camera),
            "state_topic": status,
            "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
            "payload_on": STATE_ON,
            "payload_off": STATE_OFF,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
        }
        fps = {
            "name": "analysed fps",
            **self._common(fps_id, camera),
            "state_topic": status,
            "value_template": "{{ value_json.analysed_fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "suggested_display_precision": 2,
            "entity_category": "diagnostic",
        }
        return [
            (self.config_topic("image", image_id), _dump(image)),
            (self.config_topic("binary_sensor", online_id), _dump(online)),
            (self.config_topic("sensor", fps_id), _dump(fps)),
        ]

    def rule_removal(self, camera: str, rule: str) -> list[Message]:
        """Empty retained payloads: the entity goes, and so does its retained state."""
        return [
            (self.rule_config_topic(camera, rule), ""),
            (state_topic(self.prefix, camera, rule), ""),
        ]

    def announce(
        self, cameras: Mapping[str, CameraDevice], entities: Iterable[tuple[str, str]]
    ) -> list[Message]:
        """Every config of the daemon: camera entities first, then one per (camera, rule)."""
        messages: list[Message] = []
        for device in cameras.values():
            messages += self.camera_entities(device)
        for camera, rule in entities:
            device = cameras.get(camera) or CameraDevice(camera)
            # Clear the config an older streamd left under a collision-prone id: HA would
            # otherwise keep a duplicate, never-updated entity.
            messages.append((self.legacy_config_topic(camera, rule), ""))
            messages.append(self.rule_entity(device, rule))
        return messages


def _dump(config: dict[str, Any]) -> str:
    return json.dumps(config, separators=(",", ":"))

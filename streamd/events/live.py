"""Live MQTT messages: the ones that bypass the durable outbox.

`<prefix>/stats`, camera status, a camera's latest snapshot, and `<prefix>/database` (which must
get out while the database holding the outbox is down) are state, not history: only the newest
per topic matters, so that is all that is kept. Retained ones are repeated after a reconnect, in
case the broker lost them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from streamd.events.outbox import OutboxRow
from streamd.events.snapshot import snapshot_relpath
from streamd.events.topics import camera_snapshot_topic, events_topic

log = logging.getLogger(__name__)

__all__ = ["LiveMessages", "Payload"]

Payload = str | bytes


class LiveMessages:
    """The newest unsent message per topic, and the retained ones already sent.

    `wake` is called whenever something is queued, so that the publisher's idle wait ends.
    """

    def __init__(self, prefix: str, snapshot_dir: Path, wake: Callable[[], None]) -> None:
        self.prefix = prefix
        self.snapshot_dir = snapshot_dir
        self._wake = wake
        # The newest (payload, retain, qos) per topic waiting to go out, and the retained ones
        # already sent (repeated after a reconnect, in case the broker lost them).
        self._queued: dict[str, tuple[Payload, bool, int]] = {}
        self._retained: dict[str, tuple[Payload, int]] = {}
        self._snapshot_pending: list[tuple[str, str]] = []

    @property
    def pending(self) -> bool:
        """Whether messages are waiting to go out."""
        return bool(self._queued)

    def put(self, topic: str, payload: Payload, *, retain: bool = False, qos: int = 0) -> None:
        """Queue `payload` on `topic`, replacing whatever was still waiting there."""
        self._queued[topic] = (payload, retain, qos)
        self._wake()

    def outbox_row_sent(self, row: OutboxRow) -> None:
        """An acknowledged outbox row: an event that just got a snapshot has it published as
        its camera's latest (read from disk at the next flush)."""
        if row.topic != events_topic(self.prefix):
            return
        try:
            doc = json.loads(row.payload)
            after, before = doc["after"], doc["before"]
            fresh = after["has_snapshot"] and (doc["type"] == "new" or not before["has_snapshot"])
            camera, event_id = str(after["camera"]), str(after["id"])
        except (ValueError, KeyError, TypeError):
            return
        if fresh:
            self._snapshot_pending.append((camera, event_id))
            self._wake()

    def replay_retained(self) -> None:
        """After a reconnect: send the retained messages again, unless newer ones wait."""
        for topic, (payload, qos) in self._retained.items():
            self._queued.setdefault(topic, (payload, True, qos))

    async def flush(self, client: aiomqtt.Client) -> None:
        """Publish everything queued; raises MqttError with the rest left queued."""
        if self._snapshot_pending:
            latest = dict(self._snapshot_pending)
            self._snapshot_pending.clear()
            for camera, event_id in latest.items():
                image = await asyncio.to_thread(self._read_snapshot, camera, event_id)
                if image is not None:
                    self._queued[camera_snapshot_topic(self.prefix, camera)] = (image, True, 0)
        while self._queued:
            topic, (payload, retain, qos) = next(iter(self._queued.items()))
            # Removed only once published: a lost connection leaves it for the next one.
            await client.publish(topic, payload, qos=qos, retain=retain)
            if self._queued.get(topic) == (payload, retain, qos):
                del self._queued[topic]
            if retain:
                self._retained[topic] = (payload, qos)

    def _read_snapshot(self, camera: str, event_id: str) -> bytes | None:
        try:
            path: Path = self.snapshot_dir / snapshot_relpath(camera, event_id)
            return path.read_bytes()
        except (OSError, ValueError) as exc:
            log.debug("MQTT: no snapshot to publish for event %s: %s", event_id, exc)
            return None

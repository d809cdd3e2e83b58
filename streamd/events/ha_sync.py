"""Home Assistant discovery kept in step with the rules, over the publisher's connection.

`streamd.events.discovery` builds the messages; this module decides when they go out. At each
connection every entity's config is sent (retained), configs this node left on the broker that
are no longer wanted are removed, and every entity whose state this process has not published
gets an initial OFF. While connected, `refresh` announces rules added since and removes rules
that are gone. With instances sharing a broker, a camera's initial OFFs wait until the camera is
taken here, since another instance may hold it with an event ON.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

import aiomqtt

from streamd.config import MqttConfig
from streamd.events.db import DatabaseError
from streamd.events.discovery import CameraDevice, Discovery, Message
from streamd.events.topics import STATE_OFF, state_topic

log = logging.getLogger(__name__)

__all__ = ["DrainOutbox", "Entities", "EntitySync"]

_MAX_RETAINED_CONFIGS = 100_000

Entities = Sequence[tuple[str, str]] | Callable[[], Iterable[tuple[str, str]]]
# Sends what the outbox holds; raises DatabaseError when the outbox cannot be read.
DrainOutbox = Callable[[aiomqtt.Client], Awaitable[object]]


class EntitySync:
    """The Home Assistant entities of one daemon, and what the broker has of them.

    `entities` are the (camera, rule name) pairs that get a binary_sensor: a fixed list, or a
    callable read again at every `refresh` (rules added at run time). `cameras` are the devices
    (default: the cameras named in the entities). `shared_instances`: several instances share
    the broker, so initial OFFs go out per camera taken (`camera_taken`), not at connect.
    `listing_timeout_s` bounds the wait for the broker's list of retained configs.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        entities: Entities = (),
        *,
        cameras: Mapping[str, CameraDevice] | None = None,
        base_url: str | None = None,
        shared_instances: bool = False,
        listing_timeout_s: float = 10.0,
    ) -> None:
        self.prefix = cfg.topic_prefix
        self.discovery = Discovery(cfg, base_url=base_url)
        self.shared_instances = shared_instances
        self.listing_timeout_s = listing_timeout_s
        self._entities = entities if callable(entities) else list(dict.fromkeys(entities))
        self._cameras = dict(cameras) if cameras is not None else None
        # Entities whose config is on the broker, and retained topics this process has
        # published (an entity with no state yet gets an initial OFF).
        self._announced: set[tuple[str, str]] = set()
        self._retained_sent: set[str] = set()
        self._taken: set[str] = set()  # cameras taken here whose states need an initial OFF

    @property
    def entities(self) -> list[tuple[str, str]]:
        """The (camera, rule) pairs that should have an entity now."""
        pairs = self._entities() if callable(self._entities) else self._entities
        return list(dict.fromkeys(pairs))

    def cameras(self, entities: Iterable[tuple[str, str]]) -> dict[str, CameraDevice]:
        if self._cameras is not None:
            return self._cameras
        return {camera: CameraDevice(camera) for camera, _ in entities}

    def messages(self) -> list[Message]:
        """(topic, JSON config) of every entity, for Home Assistant discovery."""
        entities = self.entities
        return self.discovery.announce(self.cameras(entities), entities)

    def retained_published(self, topic: str) -> None:
        """The broker acknowledged a retained message on `topic` (sent through the outbox):
        a state published there is newer than any initial OFF."""
        self._retained_sent.add(topic)

    def camera_taken(self, camera: str) -> None:
        """(Several instances) `camera` is about to run here and has no open event: its rules'
        states get the initial OFF at the next `connected` or `refresh`."""
        self._taken.add(camera)

    async def connected(self, client: aiomqtt.Client) -> None:
        """Everything Home Assistant needs on a new connection, before `online` is sent."""
        await self._announce_all(client)
        await self._initial_taken(client)

    async def refresh(self, client: aiomqtt.Client, drain_outbox: DrainOutbox) -> None:
        """Announce rules added since the last look, remove those that are gone.

        `drain_outbox` runs before any removal: a removed rule's open event was ended (and its
        OFF committed) before the rule left the pipelines, and that OFF sent after the removal
        would re-create the retained state that the removal clears.
        """
        await self._sync_entities(client, drain_outbox)
        await self._initial_taken(client)

    # -- steps -------------------------------------------------------------------------------

    async def _announce_all(self, client: aiomqtt.Client) -> None:
        """Every entity's config (retained), then an OFF for those with no state yet.

        Configs this node left on the broker earlier that are no longer wanted (a rule deleted
        or a camera removed while streamd was down) are removed with their retained state.
        """
        entities = self.entities
        messages = self.discovery.announce(self.cameras(entities), entities)
        wanted = {topic for topic, payload in messages if payload}
        stale = await self._retained_configs(client)
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=True)
        for topic, config in stale.items():
            if topic in wanted:
                continue
            for clear, empty in self.discovery.stale_removal(topic, config):
                await client.publish(clear, empty, qos=1, retain=True)
                self._retained_sent.discard(clear)
            log.info("Home Assistant: removed %s (no longer configured)", topic)
        self._announced = set(entities)
        await self._initial_states(client, entities)

    async def _retained_configs(self, client: aiomqtt.Client) -> dict[str, str]:
        """The node's retained discovery configs on the broker: topic → payload.

        The broker sends retained messages when the subscription is made; a marker published
        after subscribing comes back after them, so no guessing how long to listen. Bounded in
        time and count; on timeout nothing is reported stale.
        """
        node_filter = self.discovery.node_config_filter()
        marker = f"{self.prefix}/_discovery_sync/{random.getrandbits(64):016x}"
        found: dict[str, str] = {}
        await client.subscribe(node_filter, qos=1)
        await client.subscribe(marker, qos=1)
        try:
            await client.publish(marker, "sync", qos=1)
            async with asyncio.timeout(self.listing_timeout_s):
                async for msg in client.messages:
                    topic = str(msg.topic)
                    if topic == marker:
                        return found
                    if msg.retain and isinstance(msg.payload, bytes) and msg.payload:
                        found[topic] = msg.payload.decode("utf-8", "replace")
                    if len(found) > _MAX_RETAINED_CONFIGS:
                        break
        except TimeoutError:
            log.warning("MQTT: no answer listing old discovery configs; none removed")
        finally:
            await client.unsubscribe(marker)
            await client.unsubscribe(node_filter)
        return {}

    async def _initial_taken(self, client: aiomqtt.Client) -> None:
        cams = set(self._taken)
        if cams:
            todo = [(c, r) for c, r in self.entities if c in cams]
            await self._initial_states(client, todo, taken=True)
            self._taken -= cams

    async def _initial_states(
        self, client: aiomqtt.Client, entities: Iterable[tuple[str, str]], *, taken: bool = False
    ) -> None:
        # Any event of this process that was ON has gone through the outbox already (drained
        # before this), so an entity with nothing sent yet is truly OFF: every event left
        # open by a previous run was ended at start. Not so with several instances: another
        # may hold the camera and an event ON; a camera's OFFs come when it is taken here
        # (`taken`), and only for topics this process has not published: an ON already sent
        # from the outbox is newer. Either way the OFF goes before any later ON of the camera.
        if self.shared_instances and not taken:
            return
        for camera, rule in entities:
            topic = state_topic(self.prefix, camera, rule)
            if topic not in self._retained_sent:
                await client.publish(topic, STATE_OFF, qos=1, retain=True)
                self._retained_sent.add(topic)

    async def _sync_entities(self, client: aiomqtt.Client, drain_outbox: DrainOutbox) -> None:
        entities = self.entities
        current = set(entities)
        added = [e for e in entities if e not in self._announced]
        removed = sorted(self._announced - current)
        if removed:
            try:
                await drain_outbox(client)
            except DatabaseError:
                removed = []  # retried on the next pass, once the outbox is readable
        cameras = self.cameras(entities)
        for camera, rule in added:
            device = cameras.get(camera) or CameraDevice(camera)
            topic, payload = self.discovery.rule_entity(device, rule)
            await client.publish(topic, payload, qos=1, retain=True)
            self._announced.add((camera, rule))
            log.info("Home Assistant: announced %s/%s", camera, rule)
        await self._initial_states(client, added)
        for camera, rule in removed:
            for topic, payload in self.discovery.rule_removal(camera, rule):
                await client.publish(topic, payload, qos=1, retain=True)
                self._retained_sent.discard(topic)
            self._announced.discard((camera, rule))
            log.info("Home Assistant: removed %s/%s", camera, rule)

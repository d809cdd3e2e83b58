"""MQTT publisher: drains the durable outbox to the broker, reconnecting forever.

On every connection the order is: the outbox first (after a kill -9 the restart's pending `end`
envelopes and OFF states), then Home Assistant discovery and an initial OFF for every entity
whose state this process has not published yet, and only then `online`: Home Assistant never
shows a stale ON from the previous run as available. Rules added or removed while running are
announced or removed within `discovery_check_s`. Live messages (`<prefix>/stats`, camera status,
latest snapshot, and `<prefix>/database`, which must get out while the database holding the
outbox is down) bypass the outbox: the newest per topic goes out while connected, and retained
ones are repeated after a reconnect.

One long-running task (`MqttPublisher.run`) owned by the daemon's TaskGroup. The parts it
connects: `delivery` (the outbox, at-least-once and in order), `ha_sync` (Home Assistant
discovery), `live` (messages outside the outbox) and `availability` (the shared `available`
topic when several instances use one broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiomqtt
from aiomqtt import MqttError

from streamd.config import MqttConfig
from streamd.events.availability import SharedAvailability
from streamd.events.broker import CLIENT_LOG, password, probe_broker, tls_params
from streamd.events.db import DatabaseError
from streamd.events.delivery import OutboxDelivery
from streamd.events.discovery import OFFLINE, ONLINE, CameraDevice, Discovery, Message
from streamd.events.ha_sync import Entities, EntitySync
from streamd.events.live import LiveMessages, Payload
from streamd.events.outbox import OutboxRow
from streamd.events.store import EventStore
from streamd.events.topics import availability_topic, instance_availability_topic

log = logging.getLogger(__name__)

__all__ = ["OFFLINE", "ONLINE", "MqttPublisher", "PublisherStats", "probe_broker"]


@dataclass(slots=True)
class PublisherStats:
    """Counters for /metrics."""

    published: int = 0  # outbox rows acknowledged by the broker
    reconnects: int = 0  # connection attempts after a failure or a lost connection
    connected: bool = False
    dropped: int = 0  # rows the client refused outright (e.g. invalid topic): skipped, logged
    last_error: str | None = None


class MqttPublisher:
    """Publishes availability, Home Assistant discovery and the outbox to one broker.

    `entities` are the (camera, rule name) pairs that get a binary_sensor in Home Assistant: a
    fixed list, or a callable read again every `discovery_check_s` (rules added at run time).
    `cameras` are the devices (default: the cameras named in the entities); `base_url` is the
    HTTP API's, for each device's configuration_url. Timing parameters are injectable so that
    tests do not wait for production values.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        store: EventStore,
        entities: Entities = (),
        *,
        cameras: Mapping[str, CameraDevice] | None = None,
        base_url: str | None = None,
        discovery_check_s: float = 1.0,
        keepalive: int = 60,
        timeout_s: float = 10.0,
        idle_wait_s: float = 5.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        shutdown_drain_s: float = 2.0,
        batch_size: int = 100,
        instance: str | None = None,
    ) -> None:
        if store.topic_prefix is not None and store.topic_prefix != cfg.topic_prefix:
            raise ValueError(
                f"the store queues messages under {store.topic_prefix!r} but MQTT is configured "
                f"for {cfg.topic_prefix!r}"
            )
        self.cfg = cfg
        self.store = store
        self.discovery_check_s = discovery_check_s
        self.keepalive = keepalive
        self.timeout_s = timeout_s
        self.idle_wait_s = idle_wait_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.shutdown_drain_s = shutdown_drain_s
        self.batch_size = batch_size
        self.stats = PublisherStats()
        self._attempt = 0
        self._stopping = False
        self._wake = asyncio.Event()
        # With instances sharing the broker (`instance` set): this connection's Last Will is
        # the instance's own topic, and `<prefix>/available` has a connection of its own.
        self.instance = instance
        self.ha_sync = EntitySync(
            cfg,
            entities,
            cameras=cameras,
            base_url=base_url,
            shared_instances=instance is not None,
            listing_timeout_s=timeout_s,
        )
        self.live = LiveMessages(cfg.topic_prefix, store.snapshot_dir, self._wake.set)
        self.delivery = OutboxDelivery(store.outbox, batch_size, self.stats, self._after_row)
        self._shared: SharedAvailability | None = None
        if instance is not None:
            self._shared = SharedAvailability(
                cfg, f"{self._identifier}-available", password(cfg), tls_params(cfg)
            )

    @property
    def prefix(self) -> str:
        return self.cfg.topic_prefix

    @property
    def availability_topic(self) -> str:
        """What this connection's Will and online/offline go to."""
        if self.instance is not None:
            return instance_availability_topic(self.prefix, self.instance)
        return availability_topic(self.prefix)

    @property
    def _identifier(self) -> str:
        base = self.cfg.client_id or f"streamd-{self.prefix}"
        # One id per instance: a broker drops the older of two sessions with the same id.
        return base if self.instance is None else f"{base}-{self.instance}"

    # The publisher's discovery surface from before `ha_sync` was split out, kept as it was.
    @property
    def discovery(self) -> Discovery:
        return self.ha_sync.discovery

    @property
    def entities(self) -> list[tuple[str, str]]:
        """The (camera, rule) pairs that should have an entity now."""
        return self.ha_sync.entities

    def cameras(self, entities: Iterable[tuple[str, str]]) -> dict[str, CameraDevice]:
        return self.ha_sync.cameras(entities)

    def discovery_messages(self) -> list[Message]:
        """(topic, JSON config) of every entity, for Home Assistant discovery."""
        return self.ha_sync.messages()

    def publish_live(
        self, topic: str, payload: Payload, *, retain: bool = False, qos: int = 0
    ) -> None:
        """Queue a message that bypasses the outbox: only the newest per topic is kept, sent
        while connected (retained ones again after a reconnect)."""
        self.live.put(topic, payload, retain=retain, qos=qos)

    def publish_direct(self, topic: str, payload: str) -> None:
        """Publish a retained status message without the outbox, which lives in the database:
        the database's own status must get out while it is down (QoS 1, latest per topic)."""
        self.publish_live(topic, payload, retain=True, qos=1)

    def camera_taken(self, camera: str) -> None:
        """(Several instances) `camera` is about to run here and has no open event: its rules'
        states get the initial OFF that a single daemon sends at connect."""
        self.ha_sync.camera_taken(camera)
        self._wake.set()

    def _after_row(self, row: OutboxRow) -> None:
        if row.retain:
            self.ha_sync.retained_published(row.topic)
        self.live.outbox_row_sent(row)

    def _client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=password(self.cfg),
            tls_params=tls_params(self.cfg),
            identifier=self._identifier,
            keepalive=self.keepalive,
            timeout=self.timeout_s,
            will=aiomqtt.Will(self.availability_topic, OFFLINE, qos=1, retain=True),
            # paho's default of 20 unacknowledged messages would queue most of a batch locally.
            max_inflight_messages=self.batch_size,
            logger=CLIENT_LOG,
        )
        # A whole batch is in flight at once; aiomqtt warns above this many pending calls.
        client.pending_calls_threshold = self.batch_size + 10
        return client

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect on failure; returns only by cancellation."""
        self._stopping = False
        shared = None
        if self._shared is not None:
            shared = asyncio.create_task(self._shared.run(), name="mqtt-available")
        try:
            await self._run()
        finally:
            if shared is not None:
                shared.cancel()
                await asyncio.wait([shared], timeout=3.0)

    async def _run(self) -> None:
        while True:
            try:
                await self._connect_and_serve()
            except MqttError as exc:
                if self._stopping:
                    # Cancelled, then the disconnect failed: the cancel still stands.
                    raise asyncio.CancelledError from exc
                self.stats.last_error = str(exc)
                # A long outage would otherwise log every few seconds: say it when the
                # connection is lost, then every tenth failed attempt.
                level = logging.WARNING if self._attempt % 10 == 0 else logging.DEBUG
                log.log(
                    level,
                    "MQTT broker %s:%d: %s; outbox kept, reconnecting (attempt %d)",
                    self.cfg.host,
                    self.cfg.port,
                    exc,
                    self._attempt + 1,
                )
            finally:
                self.stats.connected = False
            delay = self._backoff(self._attempt)
            self._attempt += 1
            self.stats.reconnects += 1
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: many daemons restarted together do not reconnect in lockstep.
        cap = min(self.backoff_cap_s, self.backoff_base_s * 1.5 ** min(attempt, 64))
        return random.uniform(0, cap)

    async def _connect_and_serve(self) -> None:
        client = self._client()
        async with client:
            self._attempt = 0
            self.stats.connected = True
            log.info("MQTT connected to %s:%d as %s", self.cfg.host, self.cfg.port, self.prefix)
            try:
                # What the previous run left pending (its `end`s and OFFs) goes out before
                # `online`, so nobody sees its stale ON as current.
                with contextlib.suppress(DatabaseError):
                    await self.delivery.drain(client)
                if self.cfg.discovery:
                    await self.ha_sync.connected(client)
                await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
                if self._shared is not None:
                    self._shared.ready.set()
                self.live.replay_retained()
                await self.live.flush(client)
                _raise_if_cancelled()
                await self._serve(client)
            except asyncio.CancelledError:
                self._stopping = True
                await self._shutdown(client)
                raise
            finally:
                await self.delivery.settle()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Run the pump until the watcher sees the connection drop (or either fails)."""
        # Two plain tasks, not a TaskGroup: on Python 3.11 a TaskGroup whose child fails while
        # the body has already finished leaves the parent's cancel count raised, which would
        # make a later shutdown check mistake a reconnect for a cancellation.
        watch = asyncio.create_task(self._watch(client), name="mqtt-watch")
        pump = asyncio.create_task(self._pump(client), name="mqtt-pump")
        tasks = {watch, pump}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        errors = [t.exception() for t in (watch, pump) if t in done and not t.cancelled()]
        for exc in errors:
            if exc is not None:
                raise exc
        raise MqttError("MQTT publisher loop ended unexpectedly")

    async def _watch(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed by now (the discovery listing unsubscribed), so the iterator only
        # ends, raising MqttError, when the connection drops: that notices a dead broker while
        # idle, not at the next publish. A late retained config from the listing is ignored.
        async for _ in client.messages:
            pass
        raise MqttError("MQTT message stream ended")

    async def _pump(self, client: aiomqtt.Client) -> None:
        loop = asyncio.get_running_loop()
        next_drain = 0.0
        while True:
            _raise_if_cancelled()
            if self.store.outbox.new_messages.is_set() or loop.time() >= next_drain:
                # The idle deadline is a safety net only: a commit from another process (e.g.
                # a `streamd` CLI run) does not set the event.
                next_drain = loop.time() + self.idle_wait_s
                with contextlib.suppress(DatabaseError):
                    await self.delivery.drain(client)
            if self.cfg.discovery:
                await self.ha_sync.refresh(client, self.delivery.drain)
            await self.live.flush(client)
            self._wake.clear()
            if self.store.outbox.new_messages.is_set() or self.live.pending:
                continue
            wait = min(self.discovery_check_s, max(0.0, next_drain - loop.time()))
            await _wait_any((self.store.outbox.new_messages, self._wake), wait)

    async def _shutdown(self, client: aiomqtt.Client) -> None:
        """Last words before a clean disconnect; never raises (the caller re-raises the cancel)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_drain_s
        try:
            sent = await self.delivery.finish(client, self.shutdown_drain_s)
            log.debug("MQTT: %d outbox rows sent at shutdown", sent)
            # The cameras' final status (offline), queued by the daemon before cancelling us.
            await asyncio.wait_for(self.live.flush(client), max(0.0, deadline - loop.time()))
        except (TimeoutError, MqttError, DatabaseError) as exc:
            log.warning(
                "MQTT: outbox not drained at shutdown (%s); the rest goes out at the next start",
                exc or type(exc).__name__,
            )
        try:
            await asyncio.wait_for(
                client.publish(self.availability_topic, OFFLINE, qos=1, retain=True),
                min(self.timeout_s, 2.0),
            )
        except (TimeoutError, MqttError) as exc:
            log.warning("MQTT: could not publish offline at shutdown: %s", exc)


def _raise_if_cancelled() -> None:
    """Honour a cancel that a library swallowed.

    On Python 3.11, asyncio.wait_for (which aiomqtt's publish uses for its acknowledgement)
    returns normally when the cancel lands just as the awaited acknowledgement arrives; the task
    then still counts the cancel request, so it is raised here instead of being lost (which
    would leave the daemon's shutdown waiting on a publisher that keeps running).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _wait_any(events: Iterable[asyncio.Event], within: float) -> None:
    """Until one of `events` is set or `within` seconds pass."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

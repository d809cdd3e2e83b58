"""MQTT publisher: drains the durable outbox to the broker, reconnecting forever.

On every connection the order is: the outbox first (after a kill -9 the restart's pending `end`
envelopes and OFF states), then Home Assistant discovery and an initial OFF for every entity
whose state this process has not published yet, and only then `online`: Home Assistant never
shows a stale ON from the previous run as available. Rules added or removed while running are
announced or removed within `discovery_check_s`. Live messages (`<prefix>/stats`, camera status,
latest snapshot, and `<prefix>/database`, which must get out while the database holding the
outbox is down) bypass the outbox: the newest per topic goes out while connected, and retained
ones are repeated after a reconnect.

One long-running task (`MqttPublisher.run`) owned by the daemon's TaskGroup. It never loses a
message: rows leave the outbox only once the broker acknowledged them (QoS 1 PUBACK), so a broker
outage just delays them, and a message whose acknowledgement was lost is sent again (MQTT's
at-least-once). Order is kept: rows go out in id order and only an acknowledged prefix of a batch
is marked sent, so a retained state can never be overwritten by an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from aiomqtt import MqttError

from streamd.config import MqttConfig
from streamd.events.availability import SharedAvailability
from streamd.events.db import DatabaseError
from streamd.events.discovery import OFFLINE, ONLINE, CameraDevice, Discovery
from streamd.events.outbox import OutboxRow
from streamd.events.snapshot import snapshot_relpath
from streamd.events.store import EventStore
from streamd.events.topics import (
    STATE_OFF,
    availability_topic,
    camera_snapshot_topic,
    events_topic,
    instance_availability_topic,
    state_topic,
)

log = logging.getLogger(__name__)

__all__ = ["OFFLINE", "ONLINE", "MqttPublisher", "PublisherStats", "probe_broker"]

_MAX_RETAINED_CONFIGS = 100_000

Entities = Sequence[tuple[str, str]] | Callable[[], Iterable[tuple[str, str]]]
Payload = str | bytes


@dataclass(slots=True)
class PublisherStats:
    """Counters for /metrics."""

    published: int = 0  # outbox rows acknowledged by the broker
    reconnects: int = 0  # connection attempts after a failure or a lost connection
    connected: bool = False
    dropped: int = 0  # rows the client refused outright (e.g. invalid topic): skipped, logged
    last_error: str | None = None


def _password(cfg: MqttConfig) -> str | None:
    return cfg.password.get_secret_value() if cfg.password is not None else None


def _tls(cfg: MqttConfig) -> aiomqtt.TLSParameters | None:
    # TLSParameters() with no files: the system CA store, host name checked.
    return aiomqtt.TLSParameters() if cfg.tls else None


# The timeout is part of the call's contract (a start-up check with a hard bound), not a
# substitute for the caller's own asyncio.timeout.
async def probe_broker(cfg: MqttConfig, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """Whether the broker accepts a connection within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            # A random client id: probing must not kick the publisher's own session off.
            client = aiomqtt.Client(
                cfg.host,
                cfg.port,
                username=cfg.username,
                password=_password(cfg),
                tls_params=_tls(cfg),
                timeout=timeout,
            )
            async with client:
                return True
    except (MqttError, OSError, TimeoutError) as exc:
        log.debug("MQTT broker %s:%d did not answer: %s", cfg.host, cfg.port, exc)
        return False


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
        self._entities = entities if callable(entities) else list(dict.fromkeys(entities))
        self._cameras = dict(cameras) if cameras is not None else None
        self.discovery = Discovery(cfg, base_url=base_url)
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
        self._batch: asyncio.Task[int] | None = None
        self._stopping = False
        # Entities whose config is on the broker, and retained topics this process has
        # published (an entity with no state yet gets an initial OFF).
        self._announced: set[tuple[str, str]] = set()
        self._retained_sent: set[str] = set()
        # Live messages: the newest (payload, retain, qos) per topic waiting to go out, and the
        # retained ones already sent (repeated after a reconnect, in case the broker lost them).
        self._live: dict[str, tuple[Payload, bool, int]] = {}
        self._live_retained: dict[str, tuple[Payload, int]] = {}
        # Logged once per database outage, not at every idle wait.
        self._outbox_failing = False
        self._snapshot_pending: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        # With instances sharing the broker (`instance` set): this connection's Last Will is
        # the instance's own topic, and `<prefix>/available` has a connection of its own.
        self.instance = instance
        self._taken: set[str] = set()  # cameras taken here whose states need an initial OFF
        self._shared: SharedAvailability | None = None
        if instance is not None:
            self._shared = SharedAvailability(
                cfg, f"{self._identifier}-available", _password(cfg), _tls(cfg)
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

    @property
    def entities(self) -> list[tuple[str, str]]:
        """The (camera, rule) pairs that should have an entity now."""
        pairs = self._entities() if callable(self._entities) else self._entities
        return list(dict.fromkeys(pairs))

    def cameras(self, entities: Iterable[tuple[str, str]]) -> dict[str, CameraDevice]:
        if self._cameras is not None:
            return self._cameras
        return {camera: CameraDevice(camera) for camera, _ in entities}

    def publish_live(
        self, topic: str, payload: Payload, *, retain: bool = False, qos: int = 0
    ) -> None:
        """Queue a message that bypasses the outbox: only the newest per topic is kept, sent
        while connected (retained ones again after a reconnect)."""
        self._live[topic] = (payload, retain, qos)
        self._wake.set()

    def publish_direct(self, topic: str, payload: str) -> None:
        """Publish a retained status message without the outbox, which lives in the database:
        the database's own status must get out while it is down (QoS 1, latest per topic)."""
        self.publish_live(topic, payload, retain=True, qos=1)

    def camera_taken(self, camera: str) -> None:
        """(Several instances) `camera` is about to run here and has no open event: its rules'
        states get the initial OFF that a single daemon sends at connect."""
        self._taken.add(camera)
        self._wake.set()

    async def _initial_taken(self, client: aiomqtt.Client) -> None:
        cams = set(self._taken)
        if cams:
            todo = [(c, r) for c, r in self.entities if c in cams]
            await self._initial_states(client, todo, taken=True)
            self._taken -= cams

    def _client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=_password(self.cfg),
            tls_params=_tls(self.cfg),
            identifier=self._identifier,
            keepalive=self.keepalive,
            timeout=self.timeout_s,
            will=aiomqtt.Will(self.availability_topic, OFFLINE, qos=1, retain=True),
            # paho's default of 20 unacknowledged messages would queue most of a batch locally.
            max_inflight_messages=self.batch_size,
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
                    await self._drain_logged(client)
                if self.cfg.discovery:
                    await self._announce_all(client)
                    await self._initial_taken(client)
                await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
                if self._shared is not None:
                    self._shared.ready.set()
                for topic, (payload, qos) in self._live_retained.items():
                    self._live.setdefault(topic, (payload, True, qos))
                await self._flush_live(client)
                _raise_if_cancelled()
                await self._serve(client)
            except asyncio.CancelledError:
                self._stopping = True
                await self._shutdown(client)
                raise
            finally:
                await self._settle_batch()

    async def _settle_batch(self) -> None:
        """Cancel a batch the lost connection left behind, and collect its outcome."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        if not batch.done():
            batch.cancel()
            # asyncio.wait never raises the batch's exception, nor swallows our own cancel.
            await asyncio.wait({batch})
        if not batch.cancelled() and batch.exception() is not None:
            log.debug("MQTT: unfinished batch: %s", batch.exception())

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
                    await self._drain_logged(client)
            if self.cfg.discovery:
                await self._sync_entities(client)
                await self._initial_taken(client)
            await self._flush_live(client)
            self._wake.clear()
            if self.store.outbox.new_messages.is_set() or self._live:
                continue
            wait = min(self.discovery_check_s, max(0.0, next_drain - loop.time()))
            await _wait_any((self.store.outbox.new_messages, self._wake), wait)

    async def _drain_logged(self, client: aiomqtt.Client) -> int:
        try:
            sent = await self._drain(client)
        except DatabaseError as exc:
            # The outbox will still be there when the database is back; the broker
            # connection is fine, so keep it. Said once per outage, not every idle wait.
            if not self._outbox_failing:
                log.warning("MQTT: cannot read the outbox: %s", exc)
            self._outbox_failing = True
            raise
        self._outbox_failing = False
        return sent

    async def _drain(self, client: aiomqtt.Client) -> int:
        """Publish pending outbox rows until none are left; returns how many were sent."""
        sent = 0
        while True:
            # Cleared before reading, so a row committed after this read sets it again.
            self.store.outbox.new_messages.clear()
            rows = await self.store.outbox.pending(self.batch_size)
            if not rows:
                return sent
            # Shielded: a cancel (daemon shutdown) must not abandon a batch between the broker's
            # acknowledgements and mark_sent, or the shutdown drain would send it all again.
            # _shutdown awaits the batch instead.
            self._batch = asyncio.create_task(
                self._publish_rows(client, rows), name="mqtt-publish-batch"
            )
            sent += await asyncio.shield(self._batch)

    async def _publish_rows(self, client: aiomqtt.Client, rows: Sequence[OutboxRow]) -> int:
        # Publishes start in row order (paho sends in call order) and their PUBACKs are awaited
        # together: one round trip per batch instead of per message.
        results = await asyncio.gather(
            *(client.publish(r.topic, r.payload, qos=r.qos, retain=r.retain) for r in rows),
            return_exceptions=True,
        )
        done: list[int] = []
        failure: MqttError | None = None
        for row, result in zip(rows, results, strict=True):
            if result is None:
                done.append(row.id)
            elif isinstance(result, MqttError):
                failure = result
                break
            elif isinstance(result, Exception):
                # Refused by the client itself (invalid topic, oversized payload): retrying
                # cannot help and would block every later message behind it.
                log.error("MQTT: dropping outbox row %d (%s): %s", row.id, row.topic, result)
                self.stats.dropped += 1
                done.append(row.id)
            else:
                raise result
        if done:
            await self.store.outbox.mark_sent(done)
            self.stats.published += len(done)
            acked = set(done)
            for row in rows:
                if row.id in acked:
                    self._after_row(row)
        if failure is not None:
            raise failure
        return len(done)

    def _after_row(self, row: OutboxRow) -> None:
        """Bookkeeping for an acknowledged row; queues the camera's latest snapshot."""
        if row.retain:
            self._retained_sent.add(row.topic)
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
            self._wake.set()

    async def _shutdown(self, client: aiomqtt.Client) -> None:
        """Last words before a clean disconnect; never raises (the caller re-raises the cancel)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_drain_s
        try:
            if self._batch is not None:
                # Let the batch that was in flight finish and be marked sent.
                await asyncio.wait_for(asyncio.shield(self._batch), self.shutdown_drain_s)
            remaining = max(0.0, deadline - loop.time())
            sent = await asyncio.wait_for(self._drain(client), remaining)
            log.debug("MQTT: %d outbox rows sent at shutdown", sent)
            # The cameras' final status (offline), queued by the daemon before cancelling us.
            await asyncio.wait_for(self._flush_live(client), max(0.0, deadline - loop.time()))
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

    # -- live messages -----------------------------------------------------------------------

    async def _flush_live(self, client: aiomqtt.Client) -> None:
        if self._snapshot_pending:
            latest = dict(self._snapshot_pending)
            self._snapshot_pending.clear()
            for camera, event_id in latest.items():
                image = await asyncio.to_thread(self._read_snapshot, camera, event_id)
                if image is not None:
                    self._live[camera_snapshot_topic(self.prefix, camera)] = (image, True, 0)
        while self._live:
            topic, (payload, retain, qos) = next(iter(self._live.items()))
            # Removed only once published: a lost connection leaves it for the next one.
            await client.publish(topic, payload, qos=qos, retain=retain)
            if self._live.get(topic) == (payload, retain, qos):
                del self._live[topic]
            if retain:
                self._live_retained[topic] = (payload, qos)

    def _read_snapshot(self, camera: str, event_id: str) -> bytes | None:
        try:
            path: Path = self.store.snapshot_dir / snapshot_relpath(camera, event_id)
            return path.read_bytes()
        except (OSError, ValueError) as exc:
            log.debug("MQTT: no snapshot to publish for event %s: %s", event_id, exc)
            return None

    # -- Home Assistant ----------------------------------------------------------------------

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
            async with asyncio.timeout(self.timeout_s):
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

    async def _initial_states(
        self, client: aiomqtt.Client, entities: Iterable[tuple[str, str]], *, taken: bool = False
    ) -> None:
        # Any event of this process that was ON has gone through the outbox already (drained
        # before this), so an entity with nothing sent yet is truly OFF: every event left
        # open by a previous run was ended at start. Not so with several instances: another
        # may hold the camera and an event ON; a camera's OFFs come when it is taken here
        # (`taken`), and only for topics this process has not published: an ON already sent
        # from the outbox is newer. Either way the OFF goes before any later ON of the camera.
        if self.instance is not None and not taken:
            return
        for camera, rule in entities:
            topic = state_topic(self.prefix, camera, rule)
            if topic not in self._retained_sent:
                await client.publish(topic, STATE_OFF, qos=1, retain=True)
                self._retained_sent.add(topic)

    async def _sync_entities(self, client: aiomqtt.Client) -> None:
        """Announce rules added since the last look; remove those that are gone."""
        entities = self.entities
        current = set(entities)
        added = [e for e in entities if e not in self._announced]
        removed = sorted(self._announced - current)
        if removed:
            # A removed rule's open event was ended (and its OFF committed) before the rule
            # left the pipelines: send that first, or it would re-create the retained state
            # that the removal clears.
            try:
                await self._drain_logged(client)
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

    def discovery_messages(self) -> list[tuple[str, str]]:
        """(topic, JSON config) of every entity, for Home Assistant discovery."""
        entities = self.entities
        return self.discovery.announce(self.cameras(entities), entities)


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

"""MQTT publisher: drains the durable outbox to the broker, reconnecting forever.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass

import aiomqtt
from aiomqtt import MqttError

from streamd.config import MqttConfig
from streamd.events.db import DatabaseError
from streamd.events.outbox import OutboxRow
from streamd.events.store import EventStore
from streamd.events.topics import STATE_OFF, STATE_ON, availability_topic, state_topic

log = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


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


def _safe_id(name: str) -> str:
    return _UNSAFE_ID_CHARS.sub("_", name)


class MqttPublisher:
    """Publishes availability, Home Assistant discovery and the outbox to one broker.

    `entities` are the (camera, rule name) pairs that get a binary_sensor in Home Assistant.
    Timing parameters are injectable so that tests do not wait for production values.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        store: EventStore,
        entities: Sequence[tuple[str, str]] = (),
        *,
        keepalive: int = 60,
        timeout_s: float = 10.0,
        idle_wait_s: float = 5.0,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        shutdown_drain_s: float = 2.0,
        batch_size: int = 100,
    ) -> None:
        if store.topic_prefix is not None and store.topic_prefix != cfg.topic_prefix:
            raise ValueError(
                f"the store queues messages under {store.topic_prefix!r} but MQTT is configured "
                f"for {cfg.topic_prefix!r}"
            )
        self.cfg = cfg
        self.store = store
        self.entities = list(dict.fromkeys(entities))
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
        # Retained messages that bypass the outbox (see `publish_direct`): latest per topic.
        self._direct: dict[str, str] = {}
        self._direct_unsent: set[str] = set()
        self._outbox_failing = False

    @property
    def prefix(self) -> str:
        return self.cfg.topic_prefix

    @property
    def availability_topic(self) -> str:
        return availability_topic(self.prefix)

    def _client(self) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=_password(self.cfg),
            tls_params=_tls(self.cfg),
            identifier=self.cfg.client_id or f"streamd-{self.prefix}",
            keepalive=self.keepalive,
            timeout=self.timeout_s,
            will=aiomqtt.Will(self.availability_topic, OFFLINE, qos=1, retain=True),
            # paho's default of 20 unacknowledged messages would queue most of a batch locally.
            max_inflight_messages=self.batch_size,
        )
        # A whole batch is in flight at once; aiomqtt warns above this many pending calls.
        client.pending_calls_threshold = self.batch_size + 10
        return client

    def publish_direct(self, topic: str, payload: str) -> None:
        """Publish a retained status message without the outbox, which lives in the database:
        the database's own status must get out while it is down. Only the latest payload per
        topic is kept; it is sent as soon as the broker is connected, and again on reconnect."""
        self._direct[topic] = payload
        self._direct_unsent.add(topic)
        self.store.outbox.new_messages.set()  # wakes the pump

    async def _send_direct(self, client: aiomqtt.Client) -> None:
        while self._direct_unsent:
            topic = self._direct_unsent.pop()
            try:
                await client.publish(topic, self._direct[topic], qos=1, retain=True)
            except BaseException:
                self._direct_unsent.add(topic)
                raise

    # -- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect on failure; returns only by cancellation."""
        self._stopping = False
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
                await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
                if self.cfg.discovery:
                    for topic, payload in self.discovery_messages():
                        await client.publish(topic, payload, qos=1, retain=True)
                self._direct_unsent.update(self._direct)
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
        # Nothing is subscribed, so the iterator only ever ends, raising MqttError, when the
        # connection drops: that notices a dead broker while idle, not at the next publish.
        async for _ in client.messages:
            pass
        raise MqttError("MQTT message stream ended")

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            await self._send_direct(client)
            try:
                await self._drain(client)
                self._outbox_failing = False
            except DatabaseError as exc:
                # The outbox will still be there when the database is back; the broker
                # connection is fine, so keep it. Said once per outage, not every idle wait.
                if not self._outbox_failing:
                    log.warning("MQTT: cannot read the outbox: %s", exc)
                self._outbox_failing = True
            # The timeout is a safety net only: a commit from another process (e.g. a `streamd`
            # CLI run) does not set the event.
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # lands while the event is being set, and the daemon's shutdown then waits forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_wait_s):
                    await self.store.outbox.new_messages.wait()

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
        if failure is not None:
            raise failure
        return len(done)

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

    # -- Home Assistant ----------------------------------------------------------------------

    def discovery_messages(self) -> list[tuple[str, str]]:
        """(topic, JSON config) of each entity's binary_sensor, for Home Assistant discovery."""
        # The default prefix keeps the plain "streamd" ids; another prefix (a second daemon on
        # the same broker) gets its own, or the two would overwrite each other's entities.
        node = "streamd"
        if self.prefix != "streamd":
            node = f"streamd_{_safe_id(self.prefix)}"
        messages = []
        for camera, rule in self.entities:
            object_id = f"{node}_{_safe_id(camera)}_{_safe_id(rule)}"
            config = {
                "name": f"{camera} {rule}",
                "unique_id": object_id,
                "object_id": object_id,
                "state_topic": state_topic(self.prefix, camera, rule),
                "payload_on": STATE_ON,
                "payload_off": STATE_OFF,
                "availability_topic": self.availability_topic,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "device_class": "problem",
                "device": {"identifiers": [node], "name": node},
            }
            topic = f"{self.cfg.discovery_prefix}/binary_sensor/{object_id}/config"
            messages.append((topic, json.dumps(config, separators=(",", ":"))))
        return messages

"""Outbox rows to a connected broker, never losing one and never reordering.

Rows leave the outbox only once the broker acknowledged them (QoS 1 PUBACK), so a broker outage
just delays them, and a message whose acknowledgement was lost is sent again (MQTT's
at-least-once). Rows go out in id order and only an acknowledged prefix of a batch is marked
sent, so a retained state can never be overwritten by an older one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import aiomqtt
from aiomqtt import MqttError

from streamd.events.db import DatabaseError
from streamd.events.outbox import OutboxQueue, OutboxRow

log = logging.getLogger(__name__)

__all__ = ["DeliveryCounters", "OutboxDelivery"]


class DeliveryCounters(Protocol):
    published: int  # rows acknowledged by the broker (or dropped)
    dropped: int  # rows the client refused outright


class OutboxDelivery:
    """Sends the outbox in batches of `batch_size`; `on_sent` sees every row marked sent."""

    def __init__(
        self,
        outbox: OutboxQueue,
        batch_size: int,
        counters: DeliveryCounters,
        on_sent: Callable[[OutboxRow], None],
    ) -> None:
        self.outbox = outbox
        self.batch_size = batch_size
        self.counters = counters
        self._on_sent = on_sent
        self._batch: asyncio.Task[int] | None = None
        # Logged once per database outage, not at every idle wait.
        self._outbox_failing = False

    async def drain(self, client: aiomqtt.Client) -> int:
        """Publish pending rows until none are left; returns how many were sent.

        Raises MqttError when the connection fails, DatabaseError when the outbox cannot be
        read (said once per outage: the caller retries at every idle wait).
        """
        try:
            sent = await self._drain(client)
        except DatabaseError as exc:
            # The outbox will still be there when the database is back; the broker
            # connection is fine, so the caller keeps it.
            if not self._outbox_failing:
                log.warning("MQTT: cannot read the outbox: %s", exc)
            self._outbox_failing = True
            raise
        self._outbox_failing = False
        return sent

    async def finish(self, client: aiomqtt.Client, within: float) -> int:
        """At shutdown: let the batch in flight be marked sent, then send what is left.

        Raises TimeoutError past `within` seconds, and MqttError or DatabaseError as `drain`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if self._batch is not None:
            await asyncio.wait_for(asyncio.shield(self._batch), within)
        return await asyncio.wait_for(self._drain(client), max(0.0, deadline - loop.time()))

    async def settle(self) -> None:
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

    async def _drain(self, client: aiomqtt.Client) -> int:
        sent = 0
        while True:
            # Cleared before reading, so a row committed after this read sets it again.
            self.outbox.new_messages.clear()
            rows = await self.outbox.pending(self.batch_size)
            if not rows:
                return sent
            # Shielded: a cancel (daemon shutdown) must not abandon a batch between the broker's
            # acknowledgements and mark_sent, or the shutdown drain would send it all again.
            # `finish` awaits the batch instead.
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
                self.counters.dropped += 1
                done.append(row.id)
            else:
                raise result
        if done:
            await self.outbox.mark_sent(done)
            self.counters.published += len(done)
            acked = set(done)
            for row in rows:
                if row.id in acked:
                    self._on_sent(row)
        if failure is not None:
            raise failure
        return len(done)

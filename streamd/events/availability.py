"""`<prefix>/available` when several instances share one broker: online while any of them is.

Each instance's publisher connection carries *its own* Last Will
(`<prefix>/instance/<name>/available`). The shared topic gets a small connection of its own per
instance, whose Will sets it `offline`: when the last instance dies, it stays offline, as with a
single daemon. While an instance is up it watches the shared topic and puts `online` back the
moment another instance's Will (or clean stop) set it `offline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt
from aiomqtt import MqttError

from streamd.config import MqttConfig
from streamd.events.broker import CLIENT_LOG
from streamd.events.discovery import OFFLINE, ONLINE
from streamd.events.topics import availability_topic

log = logging.getLogger(__name__)

_RETRY_S = 2.0
_LAST_WORD_S = 2.0


class SharedAvailability:
    def __init__(
        self,
        cfg: MqttConfig,
        identifier: str,
        password: str | None,
        tls: aiomqtt.TLSParameters | None,
    ) -> None:
        self.cfg = cfg
        self.topic = availability_topic(cfg.topic_prefix)
        self.identifier = identifier
        self._password = password
        self._tls = tls
        self.reasserted = 0  # times `online` was put back after someone else's `offline`
        # Set by the publisher once its outbox is drained and discovery sent: `online` on the
        # shared topic waits for it, as it does with a single daemon.
        self.ready = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.cfg.host,
            self.cfg.port,
            username=self.cfg.username,
            password=self._password,
            tls_params=self._tls,
            identifier=self.identifier,
            keepalive=30,
            will=aiomqtt.Will(self.topic, OFFLINE, qos=1, retain=True),
            logger=CLIENT_LOG,
        )

    async def run(self) -> None:
        """Until cancelled; then `offline` (the others, if any, put `online` back)."""
        await self.ready.wait()
        while True:
            try:
                async with self._client() as client:
                    await self._serve(client)
            except MqttError as exc:
                log.debug("MQTT shared availability: %s; reconnecting", exc)
            await asyncio.sleep(_RETRY_S)

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            await client.publish(self.topic, ONLINE, qos=1, retain=True)
            await client.subscribe(self.topic, qos=1)
            async for msg in client.messages:
                if msg.payload == OFFLINE.encode():
                    await client.publish(self.topic, ONLINE, qos=1, retain=True)
                    self.reasserted += 1
        except asyncio.CancelledError:
            with contextlib.suppress(MqttError, TimeoutError):
                await client.unsubscribe(self.topic)
                await asyncio.wait_for(
                    client.publish(self.topic, OFFLINE, qos=1, retain=True), _LAST_WORD_S
                )
            raise
        raise MqttError("message stream ended")

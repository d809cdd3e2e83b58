"""Reaching the MQTT broker: credentials and TLS from the config, and a start-up probe."""

from __future__ import annotations

import asyncio
import logging

import aiomqtt
from aiomqtt import MqttError

from streamd.config import MqttConfig

log = logging.getLogger(__name__)

__all__ = ["CLIENT_LOG", "password", "probe_broker", "tls_params"]


class _LateAck(logging.Filter):
    """aiomqtt logs, with a traceback, a broker's acknowledgement for a subscribe or an
    unsubscribe whose call was cancelled (the daemon stopping right after sending it). That
    is expected on shutdown, not an error: it is kept at debug level, without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Unexpected message ID"):
            log.debug("MQTT: %s (its call was cancelled)", message)
            return False
        return True


# The logger every aiomqtt client here is given.
CLIENT_LOG = logging.getLogger("streamd.events.mqtt_client")
CLIENT_LOG.addFilter(_LateAck())


def password(cfg: MqttConfig) -> str | None:
    return cfg.password.get_secret_value() if cfg.password is not None else None


def tls_params(cfg: MqttConfig) -> aiomqtt.TLSParameters | None:
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
                password=password(cfg),
                tls_params=tls_params(cfg),
                timeout=timeout,
                logger=CLIENT_LOG,
            )
            async with client:
                return True
    except (MqttError, OSError, TimeoutError) as exc:
        log.debug("MQTT broker %s:%d did not answer: %s", cfg.host, cfg.port, exc)
        return False

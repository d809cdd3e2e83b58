"""`<prefix>/available` with several instances, on the real Mosquitto at 127.0.0.1:1883.

Each instance holds a small connection whose Last Will sets the shared topic offline; one
stopping (or dying) sets it offline, and the others put `online` back at once; the last one
stopping leaves it offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiomqtt
import pytest

from streamd.config import MqttConfig
from streamd.events.availability import SharedAvailability


async def _retained(topic: str) -> str | None:
    """The retained payload of `topic` now (None: nothing retained)."""
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=None) as client:
        await client.subscribe(topic, qos=1)
        marker = f"{topic}/_marker"
        await client.subscribe(marker, qos=1)
        await client.publish(marker, "x", qos=1)
        async with asyncio.timeout(5):
            async for msg in client.messages:
                if str(msg.topic) == marker:
                    return None
                if msg.retain and isinstance(msg.payload, bytes):
                    return msg.payload.decode()
    return None


async def _until(
    topic: str, want: str, within: float = 10.0, also: Callable[[], bool] = lambda: True
) -> bool:
    """Poll until `topic` retains `want` (and `also()` holds), at most `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await _retained(topic) == want and also():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_shared_availability_stays_online_while_any_instance_is(mqtt_prefix: str) -> None:
    try:
        async with aiomqtt.Client("127.0.0.1", 1883):
            pass
    except aiomqtt.MqttError as exc:
        pytest.skip(f"no MQTT broker at 127.0.0.1:1883: {exc}")
    cfg = MqttConfig(topic_prefix=mqtt_prefix)
    topic = f"{mqtt_prefix}/available"
    guards = {n: SharedAvailability(cfg, f"{mqtt_prefix}-{n}", None, None) for n in "ab"}
    tasks = {}
    try:
        for n, g in guards.items():
            g.ready.set()
            tasks[n] = asyncio.create_task(g.run())
        assert await _until(topic, "online")
        # `a` stops: it says offline, `b` puts online back.
        tasks["a"].cancel()
        await asyncio.gather(tasks["a"], return_exceptions=True)
        assert await _until(topic, "online", also=lambda: guards["b"].reasserted >= 1)
        # The last one stops: offline stays.
        tasks["b"].cancel()
        await asyncio.gather(tasks["b"], return_exceptions=True)
        assert await _until(topic, "offline")
    finally:
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", 1883) as client:
                await client.publish(topic, b"", qos=1, retain=True)

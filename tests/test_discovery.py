"""Home Assistant discovery over a real Mosquitto: ids that cannot collide, devices, entities
added and removed at run time, initial OFF, and the order after an unclean restart.

Uses the shared broker (127.0.0.1:1883) with a unique topic and discovery prefix per test, and
clears every retained topic afterwards. Home Assistant itself reads these messages in
tests/test_home_assistant.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from test_mqtt import (
    HOST,
    REPO,
    Subscriber,
    change,
    envelope_is,
    prefix,
    shared_broker,
    stop,
    store,
    topic_is,
)

from streamd import __version__
from streamd.config import ApiConfig, MqttConfig
from streamd.events.change import EventChange, Snapshot, new_event_id
from streamd.events.discovery import CameraDevice, Discovery, api_base_url, node_id
from streamd.events.mqtt import MqttPublisher
from streamd.events.store import EventStore

__all__ = ["prefix", "shared_broker", "store"]  # fixtures, imported for pytest


def mqtt_cfg(port: int, prefix: str) -> MqttConfig:
    return MqttConfig(host=HOST, port=port, topic_prefix=prefix, discovery_prefix=f"{prefix}-ha")


def make_publisher(
    port: int, prefix: str, store: EventStore, entities: object, **kwargs: object
) -> MqttPublisher:
    timing: dict[str, object] = {
        "idle_wait_s": 0.5,
        "discovery_check_s": 0.1,
        "backoff_base_s": 0.1,
        "backoff_cap_s": 0.5,
    }
    timing.update(kwargs)
    return MqttPublisher(mqtt_cfg(port, prefix), store, entities, **timing)  # type: ignore[arg-type]


def test_colliding_names_get_distinct_ids_and_topics() -> None:
    disc = Discovery(MqttConfig())
    a = disc.rule_entity(CameraDevice("front_door"), "person")
    b = disc.rule_entity(CameraDevice("front"), "door_person")
    assert a[0] != b[0]
    ca, cb = json.loads(a[1]), json.loads(b[1])
    assert ca["unique_id"] != cb["unique_id"]
    assert ca["object_id"] != cb["object_id"]
    assert ca["state_topic"] == "streamd/front_door/person/state"
    assert cb["state_topic"] == "streamd/front/door_person/state"
    # Readable ids: the names are still there, the hash only separates them.
    assert ca["unique_id"].startswith("streamd_front_door_person_")
    # Other topic prefixes get their own node; "a/b" and "a_b" stay apart too.
    assert node_id("streamd") == "streamd"
    assert node_id("a/b") != node_id("a_b")


def test_device_origin_and_camera_entities() -> None:
    api = ApiConfig(listen="127.0.0.1:8099")
    disc = Discovery(MqttConfig(), base_url=api_base_url(api))
    cam = CameraDevice("lobby", "RTSP camera")
    config = json.loads(disc.rule_entity(cam, "bag")[1])
    assert config["device"] == {
        "identifiers": ["streamd_lobby"],
        "name": "lobby",
        "manufacturer": "streamd",
        "model": "RTSP camera",
        "sw_version": __version__,
        "configuration_url": "http://127.0.0.1:8099/api/cameras",
    }
    assert config["origin"] == {"name": "streamd", "sw_version": __version__}
    entities = {t.split("/")[1]: json.loads(p) for t, p in disc.camera_entities(cam)}
    assert set(entities) == {"image", "binary_sensor", "sensor"}
    assert entities["image"]["image_topic"] == "streamd/lobby/snapshot"
    assert entities["image"]["content_type"] == "image/jpeg"
    assert entities["binary_sensor"]["state_topic"] == "streamd/lobby/status"
    assert entities["binary_sensor"]["device_class"] == "connectivity"
    assert entities["sensor"]["state_topic"] == "streamd/lobby/status"
    assert entities["sensor"]["unit_of_measurement"] == "fps"
    ids = {e["unique_id"] for e in entities.values()} | {config["unique_id"]}
    assert len(ids) == 4
    # Every entity of a camera belongs to the same device.
    assert all(e["device"]["identifiers"] == ["streamd_lobby"] for e in entities.values())


def test_api_base_url_for_wildcard_and_disabled() -> None:
    assert api_base_url(ApiConfig(enabled=False)) is None
    wildcard = api_base_url(ApiConfig(listen="0.0.0.0:8080"))
    assert wildcard is not None
    assert "0.0.0.0" not in wildcard
    assert api_base_url(ApiConfig(listen="[::1]:8080")) == "http://[::1]:8080"


async def test_rules_added_and_removed_at_run_time(
    shared_broker: int, store: EventStore, prefix: str
) -> None:
    ha = f"{prefix}-ha"
    live: list[tuple[str, str]] = [("lobby", "bag")]
    disc = Discovery(mqtt_cfg(shared_broker, prefix))
    async with Subscriber(shared_broker, [f"{prefix}/#", f"{ha}/#"]) as sub:
        pub = make_publisher(shared_broker, prefix, store, lambda: list(live))
        task = asyncio.create_task(pub.run())
        try:
            await sub.wait_for(topic_is(f"{prefix}/available", "online"))
            await sub.wait_for(topic_is(disc.rule_config_topic("lobby", "bag")))

            live.append(("lobby", "van"))
            added = await sub.wait_for(topic_is(disc.rule_config_topic("lobby", "van")))
            assert json.loads(added.payload)["state_topic"] == f"{prefix}/lobby/van/state"
            await sub.wait_for(topic_is(f"{prefix}/lobby/van/state", "OFF"))

            # An open event of the removed rule ends (its OFF committed) before the rule
            # leaves: the removal must come after that OFF, or the OFF would stay retained.
            t0 = time.time()
            eid = new_event_id(t0)
            await store.record(van("new", eid, t0))
            await sub.wait_for(topic_is(f"{prefix}/lobby/van/state", "ON"))
            mark = len(sub.messages)
            await store.record(van("end", eid, t0, t0 + 1))
            live.remove(("lobby", "van"))
            gone = await sub.wait_for(
                topic_is(disc.rule_config_topic("lobby", "van"), ""), start=mark
            )
            cleared = await sub.wait_for(topic_is(f"{prefix}/lobby/van/state", ""), start=mark)
            states = [
                i
                for i, m in enumerate(sub.messages)
                if m.topic == f"{prefix}/lobby/van/state" and i >= mark
            ]
            assert [sub.messages[i].payload for i in states] == ["OFF", ""]
            assert sub.messages.index(gone) <= sub.messages.index(cleared)
        finally:
            await stop(task)

    # Nothing of the removed rule is left retained; the remaining one still is.
    async with Subscriber(shared_broker, [f"{prefix}/lobby/#", f"{ha}/#"]) as late:
        await late.wait_for(topic_is(disc.rule_config_topic("lobby", "bag")), within=5)
        await late.wait_for(topic_is(f"{prefix}/lobby/bag/state", "OFF"), within=5)
        assert not [m for m in late.messages if "van" in m.topic]


async def test_entities_removed_while_down_are_cleared_at_start(
    shared_broker: int, store: EventStore, prefix: str
) -> None:
    """A rule deleted (or a camera removed) while streamd was down leaves no entity behind."""
    ha = f"{prefix}-ha"
    disc = Discovery(mqtt_cfg(shared_broker, prefix))
    async with Subscriber(shared_broker, [f"{prefix}/#", f"{ha}/#"]) as sub:
        first = make_publisher(
            shared_broker, prefix, store, [("lobby", "bag"), ("lobby", "van"), ("door", "van")]
        )
        task = asyncio.create_task(first.run())
        await sub.wait_for(topic_is(f"{prefix}/available", "online"))
        await stop(task)
    door_image = disc.config_topic("image", disc.camera_object_id("door", "snapshot"))

    async with Subscriber(shared_broker, [f"{prefix}/#", f"{ha}/#"]) as sub:
        # Before the restart: everything of the first run is retained.
        await sub.wait_for(topic_is(disc.rule_config_topic("lobby", "van")))
        await sub.wait_for(topic_is(door_image))
        mark = len(sub.messages)
        second = make_publisher(shared_broker, prefix, store, [("lobby", "bag")])
        task = asyncio.create_task(second.run())
        try:
            await sub.wait_for(topic_is(f"{prefix}/available", "online"), start=mark)
            for gone in (
                disc.rule_config_topic("lobby", "van"),
                disc.rule_config_topic("door", "van"),
                f"{prefix}/lobby/van/state",
                f"{prefix}/door/van/state",
                door_image,
            ):
                await sub.wait_for(topic_is(gone, ""), start=mark)
        finally:
            await stop(task)

    async with Subscriber(shared_broker, [f"{prefix}/#", f"{ha}/#"]) as late:
        await late.wait_for(topic_is(disc.rule_config_topic("lobby", "bag")), within=5)
        await late.wait_for(topic_is(f"{prefix}/available", "offline"), within=5)
        assert not [m.topic for m in late.messages if "van" in m.topic or "/door" in m.topic]


def van(kind: str, event_id: str, start: float, end: float | None = None) -> EventChange:
    base = change(kind, event_id, start, end)
    return EventChange(
        kind=base.kind,
        event_id=event_id,
        camera="lobby",
        rule_name="van",
        rule_text="alert when a van is in the driveway",
        start_time=start,
        end_time=end,
        score=0.7,
        top_score=0.7,
    )


_KILLED_RUN = """
import asyncio, sys, time
from pathlib import Path
from streamd.config import MqttConfig
from streamd.events.change import EventChange
from streamd.events.db import make_engine, upgrade
from streamd.events.mqtt import MqttPublisher
from streamd.events.store import EventStore
async def main():
    url, prefix, port, snaps, eid = sys.argv[1:6]
    await upgrade(url)
    store = EventStore(make_engine(url), Path(snaps), prefix)
    cfg = MqttConfig(host="127.0.0.1", port=int(port), topic_prefix=prefix,
                     discovery_prefix=prefix + "-ha")
    start = float(eid.split("-")[0])
    await store.record(EventChange("new", eid, "lobby", "bag", "a bag", start, None, 0.8, 0.8))
    await MqttPublisher(cfg, store, [("lobby", "bag")]).run()
asyncio.run(main())
"""


async def test_restart_after_kill_sends_pending_off_before_online(
    shared_broker: int, tmp_path: Path, prefix: str
) -> None:
    """A run killed (-9) with an event open: the restart's `end` and OFF precede `online`."""
    from streamd.events.db import make_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'k.db'}"
    eid = new_event_id(time.time() - 5)
    async with Subscriber(shared_broker, [f"{prefix}/#"]) as sub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLED_RUN, url, prefix, str(shared_broker),
            str(tmp_path / "snaps"), eid, cwd=REPO, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await sub.wait_for(topic_is(f"{prefix}/lobby/bag/state", "ON"), within=30)
            proc.kill()
            await sub.wait_for(topic_is(f"{prefix}/available", "offline"))  # the will
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()

    engine = make_engine(url)
    store = EventStore(engine, tmp_path / "snaps", prefix)
    try:
        # The next start ends what the previous run left open, as the daemon does.
        assert await store.close_open(time.time()) == [eid]
        async with Subscriber(shared_broker, [f"{prefix}/#"]) as sub:
            # The old run's retained ON and offline are what a client sees first.
            await sub.wait_for(topic_is(f"{prefix}/lobby/bag/state", "ON"))
            await sub.wait_for(topic_is(f"{prefix}/available", "offline"))
            mark = len(sub.messages)
            second = make_publisher(shared_broker, prefix, store, [("lobby", "bag")])
            task = asyncio.create_task(second.run())
            try:
                online = await sub.wait_for(topic_is(f"{prefix}/available", "online"), start=mark)
                end = await sub.wait_for(envelope_is(prefix, "end", eid), start=mark)
                off = await sub.wait_for(topic_is(f"{prefix}/lobby/bag/state", "OFF"), start=mark)
                assert sub.messages.index(end) < sub.messages.index(online)
                assert sub.messages.index(off) < sub.messages.index(online)
            finally:
                await stop(task)
    finally:
        await engine.dispose()


async def test_envelope_frigate_fields_and_snapshot_image(
    shared_broker: int, tmp_path: Path, prefix: str
) -> None:
    from streamd.events.db import make_engine, upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"
    await upgrade(url)
    engine = make_engine(url)
    store = EventStore(
        engine, tmp_path / "snaps", prefix, snapshot_url_base="http://127.0.0.1:8099"
    )
    # Text topics only: the snapshot topic carries JPEG bytes, read below with a raw client.
    async with Subscriber(shared_broker, [f"{prefix}/events", f"{prefix}/available"]) as sub:
        pub = make_publisher(shared_broker, prefix, store, [("lobby", "bag")])
        task = asyncio.create_task(pub.run())
        try:
            await sub.wait_for(topic_is(f"{prefix}/available", "online"))
            t0 = time.time()
            eid = new_event_id(t0)
            image = np.zeros((48, 64, 3), np.uint8)
            image[10:30, 20:40] = 200
            base = change("new", eid, t0)
            await store.record(
                EventChange(**{**_fields(base), "snapshot": Snapshot(image)})  # type: ignore[arg-type]
            )
            new = json.loads((await sub.wait_for(envelope_is(prefix, "new", eid))).payload)
            after = new["after"]
            assert after["current_zones"] == []
            assert after["entered_zones"] == []
            assert after["sub_label"] is None
            assert after["false_positive"] is False
            assert after["frame_time"] >= after["start_time"]
            assert after["snapshot_url"] == f"http://127.0.0.1:8099/api/events/{eid}/snapshot.jpg"
            saved = (tmp_path / "snaps" / "lobby" / f"{eid}.jpg").read_bytes()
            assert saved[:2] == b"\xff\xd8"
            assert await retained_bytes(shared_broker, f"{prefix}/lobby/snapshot") == saved
            await store.record(change("end", eid, t0, t0 + 2))
            end = json.loads((await sub.wait_for(envelope_is(prefix, "end", eid))).payload)
            assert end["after"]["frame_time"] == pytest.approx(t0 + 2, abs=1e-6)
        finally:
            await stop(task)
            await engine.dispose()


async def retained_bytes(port: int, topic: str) -> bytes:
    """The retained payload of `topic`, polled (it is published right after the envelope)."""
    for _ in range(100):
        async with aiomqtt.Client(HOST, port, timeout=5) as client:
            await client.subscribe(topic, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    async for msg in client.messages:
                        # A live copy can arrive first; only the retained one proves it stays.
                        if msg.retain:
                            assert isinstance(msg.payload, bytes)
                            return msg.payload
    pytest.fail(f"nothing retained on {topic}")


def _fields(c: EventChange) -> dict[str, object]:
    return {f: getattr(c, f) for f in c.__slots__}  # type: ignore[attr-defined]

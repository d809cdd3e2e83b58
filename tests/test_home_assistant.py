"""A real Home Assistant (2025.4.4) discovers `streamd run` over a private Mosquitto.

Checks what an operator sees in Home Assistant: the rule entities appear (OFF at once, not
"unknown"), one turns on and off with the demo scene's left bag, a rule added through the API
appears within 15 s and a deleted one disappears, the colliding names `front_door`/`person` and
`front`/`door_person` stay two entities, each camera has an image, an online sensor and an fps
sensor on its own device, and everything goes unavailable when streamd stops.

Home Assistant runs from the venv scripts/ha-venv prepares (`.ci/run` does); without it the
test skips and says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.daemon import MqttWatcher, StreamdProcess, free_port
from support.home_assistant import (
    HomeAssistant,
    PrivateMosquitto,
    ha_unavailable,
    wait_number,
    wait_state,
)

from streamd.config import MqttConfig
from streamd.events.discovery import Discovery

pytestmark = pytest.mark.slow

BAG_RULE = "alert when a bag is left unattended for 10 seconds"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMosquitto]:
    reason = ha_unavailable()
    if reason and os.environ.get("STREAMD_REQUIRE_HA") == "1":
        pytest.fail(f"STREAMD_REQUIRE_HA=1 but {reason}")
    if reason:
        pytest.skip(reason)
    broker = PrivateMosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def hass(
    broker: PrivateMosquitto, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HomeAssistant]:
    ha = HomeAssistant(tmp_path_factory.mktemp("hass"))
    try:
        ha.start()
        ha.onboard()
        ha.add_mqtt(broker.port)
        yield ha
    finally:
        ha.stop()


def entity(kind: str, unique_id: str) -> str:
    return f"{kind}.{unique_id}"


def test_home_assistant_follows_streamd(
    hass: HomeAssistant, broker: PrivateMosquitto, tmp_path: Path
) -> None:
    api_port = free_port()
    cfg = {
        "data_dir": "data",  # relative, as in the demo: snapshots must still be served
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'streamd.db'}"},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "stats_interval_s": 2},
        "api": {"listen": f"127.0.0.1:{api_port}"},
        "window": {"enabled": False},
        # Motion and scene analysis only: the demo's left bag needs no model file.
        "model": {"detector": {"path": None, "url": None}},
        "cameras": {"front_door": {"demo": True}, "front": {"demo": True}},
        "rules": [
            {"name": "person", "text": BAG_RULE, "cameras": ["front_door"], "cooldown_s": 5},
            {"name": "door_person", "text": BAG_RULE, "cameras": ["front"], "cooldown_s": 5},
        ],
    }
    disc = Discovery(MqttConfig())
    node = disc.node

    def rule_entity(camera: str, rule: str) -> str:
        return entity("binary_sensor", f"{node}_{disc.rule_object_id(camera, rule)}")

    person = rule_entity("front_door", "person")
    door_person = rule_entity("front", "door_person")
    ok, why = MqttWatcher.available()
    if not ok:
        pytest.skip(why)
    # "streamd/events/#" also matches streamd/events itself: the envelopes, text only.
    envelopes = MqttWatcher("streamd/events", port=broker.port).start()
    daemon = StreamdProcess(cfg, tmp_path).start()
    api = f"http://127.0.0.1:{api_port}"
    try:
        # Both colliding pairs are entities of their own, OFF from the start.
        assert wait_state(hass, person, {"off"}, within=60) == "off"
        assert wait_state(hass, door_person, {"off"}, within=15) == "off"
        states = hass.states()
        assert states[person]["attributes"]["friendly_name"] == "front_door person"
        assert states[door_person]["attributes"]["friendly_name"] == "front door_person"

        # Per camera: the latest snapshot, online and analysed fps, on the camera's device.
        for camera in ("front_door", "front"):
            online = entity("binary_sensor", f"{node}_{camera}_online")
            fps = entity("sensor", f"{node}_{camera}_analysed_fps")
            assert wait_state(hass, online, {"on"}, within=30) == "on"
            assert wait_number(hass, fps, within=30) >= 0
            assert entity("image", f"{node}_{camera}_snapshot") in hass.states()

        # The demo scene leaves a bag at 5 s: on after the 10 s hold, off once picked up.
        assert wait_state(hass, person, {"on"}, within=90) == "on"
        assert wait_state(hass, person, {"off"}, within=90) == "off"
        image = hass.states()[entity("image", f"{node}_front_door_snapshot")]
        assert image["state"] not in ("unknown", "unavailable"), image

        # The event's snapshot is served although data_dir is relative.
        events = httpx.get(f"{api}/api/events", params={"camera": "front_door"}, timeout=10)
        first = events.json()[0]
        snap = httpx.get(f"{api}/api/events/{first['id']}/snapshot.jpg", timeout=10)
        assert snap.status_code == 200
        assert snap.content[:2] == b"\xff\xd8"

        # The envelope's snapshot_url is the endpoint that serves that snapshot.
        urls = {
            env["after"]["id"]: env["after"]["snapshot_url"]
            for env in (m.json() for m in envelopes.messages)
            if env["type"] == "new"
        }
        assert urls[first["id"]] == f"{api}/api/events/{first['id']}/snapshot.jpg"
        assert httpx.get(urls[first["id"]], timeout=10).content == snap.content

        # /metrics counts what SQL holds.
        metrics = httpx.get(f"{api}/metrics", timeout=10).text
        got = {
            (s.name, s.labels.get("camera"), s.labels.get("rule")): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
        }
        logged = httpx.get(f"{api}/api/events", params={"limit": 1000}, timeout=10).json()
        for camera, rule in (("front_door", "person"), ("front", "door_person")):
            n = sum(1 for e in logged if (e["camera"], e["rule"]) == (camera, rule))
            assert got.get(("streamd_events_stored", camera, rule), 0) == n
            assert got.get(("streamd_events_total", camera, rule), 0) == n

        # A rule added through the API appears within 15 s; deleted, it disappears.
        late = rule_entity("front", "late_bag")
        r = httpx.post(
            f"{api}/api/rules",
            json={"name": "late_bag", "text": BAG_RULE, "cameras": ["front"]},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        assert wait_state(hass, late, {"off", "on"}, within=15) in ("off", "on")
        r = httpx.delete(f"{api}/api/rules/late_bag", timeout=30)
        assert r.status_code == 204, r.text
        assert wait_state(hass, late, {None}, within=15) is None
    except BaseException:
        print(daemon.log()[-4000:])
        raise
    finally:
        _, rc = daemon.terminate()
        envelopes.stop()
    assert rc == 0, daemon.log()[-3000:]
    # streamd stopped: its entities are unavailable, not frozen at their last state.
    for eid in (person, door_person):
        assert wait_state(hass, eid, {"unavailable"}, within=15) == "unavailable"
    # Home Assistant accepted every config streamd sent (it logs rejected ones as errors).
    errors = [line for line in hass.log().splitlines() if "ERROR" in line and "mqtt" in line]
    assert not errors, errors

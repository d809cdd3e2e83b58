"""The real daemon with a relative data_dir (as in the demo): the `snapshot_url` of each MQTT
event resolves, through the daemon's own API, to the event's JPEG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from support.daemon import MqttWatcher, StreamdProcess, free_port, wait_for

pytestmark = pytest.mark.slow


def test_snapshot_url_in_mqtt_payloads_resolves(tmp_path: Path, mqtt_prefix: str) -> None:
    ok, why = MqttWatcher.available()
    if not ok:
        pytest.skip(why)
    listen = f"127.0.0.1:{free_port()}"
    cfg: dict[str, Any] = {
        "data_dir": "data",  # relative to the daemon's working directory, tmp_path
        "database": {"url": "sqlite+aiosqlite:///data/streamd.db"},
        "mqtt": {"topic_prefix": mqtt_prefix, "discovery": False},
        "api": {"listen": listen},
        "window": {"enabled": False},
        "model": {"detector": {"path": str(tmp_path / "none.onnx"), "url": None}},
        "cameras": {"demo": {"demo": True}},
        "rules": [{"name": "moving", "text": "there is motion", "cooldown_s": 0}],
    }
    watcher = MqttWatcher(mqtt_prefix).start()
    proc = StreamdProcess(cfg, tmp_path).start()
    try:

        def with_snapshot() -> list[dict[str, Any]]:
            sides = [m.json()["after"] for m in watcher.events("new")]
            return [s for s in sides if s["has_snapshot"]]

        sides = wait_for(with_snapshot, 60, interval=0.5)
        assert sides, proc.log()[-3000:]
        side = sides[0]
        assert side["snapshot_url"] == (f"http://{listen}/api/events/{side['id']}/snapshot.jpg")
        r = httpx.get(side["snapshot_url"], timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        assert r.content[:2] == b"\xff\xd8"
        assert (tmp_path / "data" / "snapshots" / "demo" / f"{side['id']}.jpg").is_file()
    finally:
        _, rc = proc.terminate()
        watcher.stop()
    assert rc == 0

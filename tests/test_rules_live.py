"""Rules on a running daemon with real parts: a GStreamer RTSP camera, Mosquitto, SQLite.

- SIGHUP reloads the rules from the file: a new rule is attached and fires while the camera's
  connection is untouched (reconnects stay 0), and GET /api/rules shows its live state.
- A verified rule's event carries the VLM's verdict into SQL and the MQTT payload's
  `description`. The VLM is the stand-in OpenAI-compatible server of tests/support/vlm_server.py
  (no real VLM can run on this machine).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import clip_or_skip
from support.clips import left_object_clip
from support.daemon import MqttWatcher, StreamdProcess, free_port, wait_for
from support.rtsp import RtspServer, gst_rtsp_available
from support.vlm_server import serve_vlm, verdict_json

pytestmark = pytest.mark.slow

BAG = "alert when a bag is left unattended for 5 seconds"


@pytest.fixture(autouse=True)
def _needs_peers() -> None:
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    ok, why = MqttWatcher.available()
    if not ok:
        pytest.skip(why)


def _config(tmp: Path, prefix: str, url: str, model: Path, port: int) -> dict[str, Any]:
    return {
        "data_dir": str(tmp / "data"),
        "segment_s": 2.0,
        "database": {"url": f"sqlite+aiosqlite:///{tmp / 'events.db'}"},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic_prefix": prefix,
                 "discovery_prefix": f"{prefix}-ha"},
        "api": {"listen": f"127.0.0.1:{port}"},
        "model": {"detector": {"path": str(model)}},
        "window": {"enabled": False},
        "cameras": {"lobby": {"url": url, "stall_timeout_s": 6.0}},
        "rules": [{"name": "crowd", "text": "more than 5 people for 10 seconds"}],
    }  # fmt: skip


def _get(url: str) -> Any:
    """JSON from the daemon's API, or None while it is not listening yet."""
    try:
        return httpx.get(url, timeout=5).json()
    except httpx.TransportError:
        return None


def _camera(api: str) -> dict[str, Any]:
    cams: dict[str, dict[str, Any]] = _get(f"{api}/api/cameras") or {}
    return cams.get("lobby", {"online": False})


def _rule(api: str, name: str) -> dict[str, Any] | None:
    rules: list[dict[str, Any]] = _get(f"{api}/api/rules") or []
    return next((r for r in rules if r["name"] == name), None)


def _rows(proc: StreamdProcess) -> list[dict[str, Any]]:
    out = proc.cli("events", "-c", str(proc.config_path), "--json")
    if out.returncode != 0:
        return []  # the daemon may still be creating the database
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def test_sighup_adds_a_rule_without_touching_the_camera(
    tmp_path: Path, clips_dir: Path, model_path: Path, mqtt_prefix: str
) -> None:
    clip = clip_or_skip(left_object_clip, clips_dir, bg="static")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with RtspServer(files={"lobby": clip}) as server:
        cfg = _config(tmp_path, mqtt_prefix, server.url("lobby"), model_path, port)
        proc = StreamdProcess(cfg, tmp_path).start()
        try:
            wait_for(lambda: _camera(api)["online"], timeout=60, interval=0.5)
            assert [r["name"] for r in httpx.get(f"{api}/api/rules").json()] == ["crowd"]
            cfg["rules"].append({"name": "bag", "text": BAG})
            proc.config_path.write_text(yaml.safe_dump(cfg))
            assert proc.proc is not None
            os.kill(proc.proc.pid, signal.SIGHUP)

            bag = wait_for(lambda: _rule(api, "bag"), timeout=15, interval=0.3)
            assert bag is not None, proc.log()[-2000:]
            assert bag["live"][0]["camera"] == "lobby"
            assert "unattended" in bag["plan"]
            rows = wait_for(lambda: [r for r in _rows(proc) if r["rule"] == "bag"], 45, 1.0)
            assert rows, proc.log()[-3000:]
            cam = _camera(api)
            assert cam["reconnects"] == 0  # the connection was never dropped
            live = wait_for(lambda: (_rule(api, "bag") or {})["live"][0]["active_events"], 10, 0.3)
            assert live == [rows[0]["id"]]
            # a broken file changes nothing: the error is logged, the rules stay
            proc.config_path.write_text(
                yaml.safe_dump({**cfg, "rules": [{"name": "x", "text": "a unicorn appears"}]})
            )
            os.kill(proc.proc.pid, signal.SIGHUP)
            wait_for(lambda: "rules not reloaded" in proc.log(), 10, 0.2)
            names = [r["name"] for r in httpx.get(f"{api}/api/rules").json()]
            assert names == ["crowd", "bag"]
        finally:
            proc.terminate()
    assert "rules reloaded from" in proc.log()


def test_verified_event_carries_the_verdict_to_sql_and_mqtt(
    tmp_path: Path, clips_dir: Path, model_path: Path, mqtt_prefix: str
) -> None:
    clip = clip_or_skip(left_object_clip, clips_dir, bg="static")
    port = free_port()
    watcher = MqttWatcher(mqtt_prefix).start()
    with serve_vlm() as vlm, RtspServer(files={"lobby": clip}) as server:
        vlm.script.reply = verdict_json(True, 0.91, "a brown bag stands alone on the floor")
        cfg = _config(tmp_path, mqtt_prefix, server.url("lobby"), model_path, port)
        cfg["verify"] = {"backend": "openai", "openai": {"base_url": vlm.url, "model": "qwen"}}
        cfg["rules"] = [{"name": "bag", "text": BAG, "verify": {"enabled": True}}]
        proc = StreamdProcess(cfg, tmp_path).start()
        try:
            new = wait_for(lambda: watcher.events("new"), timeout=60, interval=0.5)
            assert new, proc.log()[-3000:]
            after = new[0].json()["after"]
            assert after["description"] == "confirmed (0.91): a brown bag stands alone on the floor"
            rows = wait_for(lambda: _rows(proc), 20, 1.0)
            details = rows[0]["details"]
            assert details["verification"]["verdict"] == "confirmed"
            assert details["verification"]["backend"].startswith("openai")
            (req,) = vlm.script.requests[:1]
            content = req["body"]["messages"][-1]["content"]
            texts = [c["text"] for c in content if c["type"] == "text"]
            images = [c for c in content if c["type"] == "image_url"]
            assert any(BAG in t for t in texts)
            assert images  # the frames of the candidate's segment
            rule = httpx.get(f"http://127.0.0.1:{port}/api/rules").json()[0]
            assert rule["last_verdict"]["verdict"] == "confirmed"
        finally:
            proc.terminate()
            watcher.stop()

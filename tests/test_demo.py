"""README's first command: `streamd run` with no config runs the built-in demo end to end."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.daemon import wait_for

from streamd.config import MqttConfig
from streamd.events.discovery import CameraDevice, Discovery

pytestmark = pytest.mark.slow

# `streamd events` before the daemon's first migration has finished
_NOT_CREATED_YET = ("no database at", "is at schema none")

_DISC = Discovery(MqttConfig())
DEMO_TOPICS = (
    "streamd/available",
    "streamd/database",
    "streamd/demo/unattended-bag/state",
    "streamd/demo/status",
    "streamd/demo/snapshot",
    _DISC.rule_config_topic("demo", "unattended-bag"),
    *(topic for topic, _ in _DISC.camera_entities(CameraDevice("demo"))),
)


def test_run_without_config_alerts_within_a_minute(tmp_path: Path) -> None:
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamd", "run"], cwd=tmp_path, stdout=log, stderr=log
    )
    try:

        def events() -> list[dict[str, object]]:
            out = subprocess.run(
                [sys.executable, "-m", "streamd", "events", "--json"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if out.returncode == 2 and any(m in out.stderr for m in _NOT_CREATED_YET):
                return []  # `events` only reads: the daemon has not created the database yet
            assert out.returncode == 0, out.stderr
            rows: list[dict[str, object]] = json.loads(out.stdout)
            return rows

        rows = wait_for(events, timeout=60, interval=2.0)
        assert rows, (tmp_path / "run.log").read_text()[-3000:]
        assert rows[0]["camera"] == "demo"
        assert rows[0]["rule"] == "unattended-bag"
        assert rows[0]["has_snapshot"]
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        elapsed = time.monotonic() - t0
        log.close()
        # the demo talks to a local broker when one answers: leave nothing retained behind
        for topic in DEMO_TOPICS if shutil.which("mosquitto_pub") else ():
            subprocess.run(["mosquitto_pub", "-r", "-n", "-t", topic], check=False, timeout=5)
    text = (tmp_path / "run.log").read_text()
    assert rc == 0
    assert elapsed < 5.0
    assert "running the built-in demo" in text
    assert ("MQTT connected" in text) or ("alerts go to SQL and the log only" in text)
    assert (tmp_path / "streamd-data" / "streamd.db").is_file()

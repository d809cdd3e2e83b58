"""Tools for the outage drills: a motion clip, a persistent MQTT subscriber, the count by id.

The drills run the real daemon (`support.daemon.StreamdProcess`) against private services
(`support.services`) and count every event by id in three places: the daemon's log (each change
is logged once it is durable: committed, or in the fsync'd journal), the SQL log, and what a
third-party MQTT client received.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_EVENT_LINE = re.compile(r"streamd\.events\.writer: event (new|update|end) (\S+) ")


def motion_clip(path: Path, seconds: float = 6.0, fps: int = 10, period: float = 3.0) -> Path:
    """A grey scene where a box moves for 1.2 s of every `period` s and then stands still.

    Looped at 4 fps with the rule `motion` (clear_s 0.5, no cooldown) this opens and ends one
    event per period per camera. Encoded with PyAV (MPEG-4 part 2), so no ffmpeg CLI is needed.
    """
    if path.exists():
        return path
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(int(seconds * fps)):
            phase = (i / fps) % period
            x = int(20 + phase * 150) if phase < 1.2 else 200
            img = np.full((240, 320, 3), 112, np.uint8)
            img[80:140, x : x + 40] = (200, 60, 30)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def drill_config(
    tmp: Path, db_url: str, broker_port: int, prefix: str, clip: Path, api_port: int | None = None
) -> dict[str, Any]:
    return {
        "data_dir": str(tmp / "data"),
        "segment_s": 0.5,
        "database": {"url": db_url},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "topic_prefix": prefix,
            "discovery_prefix": f"{prefix}-ha",
        },
        "api": {"enabled": api_port is not None, "listen": f"127.0.0.1:{api_port or 8080}"},
        "model": {"detector": {"path": None, "url": None}},  # motion only, no download
        "window": {"enabled": False},
        "cameras": {
            name: {"file": str(clip), "loop": True, "fps": 4.0, "stall_timeout_s": 5.0}
            for name in ("cam_a", "cam_b")
        },
        "rules": [{"name": "motion", "text": "motion", "cooldown_s": 0, "clear_s": 0.5}],
    }


@dataclass
class Received:
    topic: str
    payload: str
    retain: bool


@dataclass
class PersistentSubscriber:
    """paho-mqtt with a persistent session (clean_session=False) and QoS 1 on `<prefix>/#`.

    The private broker keeps the session across its own restarts (it is stopped with SIGTERM,
    which saves it), so messages published while this client is reconnecting still arrive.
    """

    port: int
    prefix: str
    messages: list[Received] = field(default_factory=list)

    def start(self, timeout: float = 10.0) -> PersistentSubscriber:
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"drill-{self.prefix}",
            clean_session=False,
        )
        client.reconnect_delay_set(0.1, 1.0)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(timeout):
            raise RuntimeError("drill subscriber: no SUBACK")
        return self

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/snapshot"):
            return  # a camera's latest snapshot: JPEG bytes, not text, and not counted here
        with self._lock:
            self.messages.append(Received(msg.topic, msg.payload.decode(), bool(msg.retain)))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def envelopes(self) -> list[tuple[str, str]]:
        """(type, id) of every message on `<prefix>/events`, in arrival order."""
        out = []
        for m in self.snapshot():
            if m.topic == f"{self.prefix}/events":
                doc = json.loads(m.payload)
                assert doc["before"]["id"] == doc["after"]["id"]
                out.append((doc["type"], doc["after"]["id"]))
        return out

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.snapshot() if m.topic == f"{self.prefix}/{suffix}"]


def logged_changes(*logs: str) -> list[tuple[str, str]]:
    """(kind, id) of every durable change the daemon logged, in order."""
    return [(m.group(1), m.group(2)) for text in logs for m in _EVENT_LINE.finditer(text)]


def sqlite_pending_outbox(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])


@dataclass
class DrillCount:
    """The drill table's row: counted by event id."""

    name: str
    fired: set[str]
    in_sql: set[str]
    ended_in_sql: set[str]
    delivered: list[tuple[str, str]]  # (type, id) as received, repeats included
    during_outage: int
    note: str = ""

    @property
    def delivered_new(self) -> set[str]:
        return {i for t, i in self.delivered if t == "new"}

    @property
    def delivered_end(self) -> set[str]:
        return {i for t, i in self.delivered if t == "end"}

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(self.delivered).values())

    @property
    def lost(self) -> set[str]:
        return self.fired - (self.in_sql & self.delivered_new)

    def row(self) -> str:
        return (
            f"| {self.name:<24} | {len(self.fired):>5} | {self.during_outage:>6} | "
            f"{len(self.in_sql):>6} | {len(self.delivered_new):>9} | {self.duplicates:>10} | "
            f"{len(self.lost):>4} | {len(self.delivered):>9} | {self.note}"
        )

    @staticmethod
    def header() -> str:
        return (
            "| drill                    | fired | outage | in SQL | delivered | duplicates | lost |"
            " envelopes | note\n"
            "|--------------------------|-------|--------|--------|-----------|------------|------|"
            "-----------|-----"
        )


def wait_until(cond: Any, timeout: float, interval: float = 0.2) -> Any:
    """Poll `cond` until truthy or `timeout` s pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

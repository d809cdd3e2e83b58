"""Run the real `streamd` CLI as a subprocess, and watch MQTT with a real third-party client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MODEL = SHARED / "models" / "yolox_nano.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll `cond` until it returns something truthy or `timeout` passes (returns that value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class StreamdProcess:
    """`python -m streamd run -c CONFIG` with its log captured to a file."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "streamd.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "streamd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamdProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamd", "run", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 10.0) -> tuple[float, int | None]:
        """SIGTERM; returns (seconds to exit, exit code or None if it had to be killed)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self._log.close()
        return time.monotonic() - t0, rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self._log.close()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamd", *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@dataclass
class Message:
    at: float
    topic: str
    payload: str

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class MqttWatcher:
    """mosquitto_sub on `<prefix>/#`: a real third-party consumer; every message time-stamped."""

    prefix: str
    port: int = 1883
    messages: list[Message] = field(default_factory=list)

    @staticmethod
    def available() -> tuple[bool, str]:
        if shutil.which("mosquitto_sub") is None:
            return False, "mosquitto_sub not installed (apt-get install mosquitto-clients)"
        return True, ""

    def start(self) -> MqttWatcher:
        self.proc = subprocess.Popen(
            # -T: the cameras' latest snapshots are JPEG bytes, not lines of text.
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1", "-v",
             "-t", f"{self.prefix}/#", "-T", f"{self.prefix}/+/snapshot"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # the subscription is in place before anything is published
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            self.messages.append(Message(time.time(), topic, payload))

    def on(self, suffix: str) -> list[Message]:
        return [m for m in self.messages if m.topic == f"{self.prefix}/{suffix}"]

    def events(self, kind: str | None = None) -> list[Message]:
        return [m for m in self.on("events") if kind is None or m.json()["type"] == kind]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        # Leave no retained messages behind on the shared broker.
        for topic in {m.topic for m in self.messages}:
            subprocess.run(
                ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-r", "-n",
                 "-t", topic],
                check=False,
                timeout=5,
            )  # fmt: skip

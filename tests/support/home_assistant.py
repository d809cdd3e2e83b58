"""A real Home Assistant (2025.4.4) for discovery tests, driven through its REST API.

The venv comes from scripts/ha-venv (Python 3.13.0 under pyenv; `.ci/run` prepares it). Home
Assistant cannot take an MQTT broker from YAML any more, so the test onboards a user and adds
the MQTT config entry through the config flow, as a person would in the UI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from support.daemon import free_port, wait_for

HA_VERSION = "2025.4.4"


def ha_venv() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("STREAMD_HA_VENV") or default / "streamd" / f"ha-venv-{HA_VERSION}")


def ha_unavailable() -> str | None:
    """Why Home Assistant cannot run here, or None."""
    hass = ha_venv() / "bin" / "hass"
    if not hass.exists():
        return f"Home Assistant venv missing ({hass}): run scripts/ha-venv (CI does)"
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        return "mosquitto is not installed"
    return None


class PrivateMosquitto:
    """A broker of the test's own on a free loopback port (never the shared one)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "mosquitto")
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"log_dest file {self.log}\nuser {user}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateMosquitto:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)])

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        if not wait_for(listening, timeout=10, interval=0.05):
            raise RuntimeError("private mosquitto did not listen within 10 s")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class HomeAssistant:
    """`hass -c DIR` on a free port; `states()` reads GET /api/states with a user's token."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "hass.log"
        self.token: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> HomeAssistant:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "configuration.yaml").write_text(
            "homeassistant:\n  name: streamd-test\n  time_zone: UTC\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nmqtt:\nlogger:\n  default: warning\n"
        )
        hass = ha_venv() / "bin" / "hass"
        self._log = self.log_path.open("wb")
        # --skip-pip: everything is pinned in the venv; nothing may be installed at run time.
        self.proc = subprocess.Popen(
            [str(hass), "-c", str(self.dir), "--skip-pip"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited: {self.log()[-3000:]}")
            try:
                return httpx.get(f"{self.base}/api/onboarding", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_for(ready, timeout=timeout, interval=0.5):
            raise RuntimeError(f"Home Assistant not ready in {timeout} s: {self.log()[-3000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def onboard(self) -> None:
        """Create the owner and take an access token (the first onboarding step)."""
        client_id = f"{self.base}/"
        r = httpx.post(
            f"{self.base}/api/onboarding/users",
            json={
                "client_id": client_id,
                "name": "streamd test",
                "username": "streamd",
                "password": "streamd-test-password",
                "language": "en",
            },
            timeout=30,
        )
        r.raise_for_status()
        r = httpx.post(
            f"{self.base}/auth/token",
            data={
                "grant_type": "authorization_code",
                "code": r.json()["auth_code"],
                "client_id": client_id,
            },
            timeout=30,
        )
        r.raise_for_status()
        self.token = str(r.json()["access_token"])

    def _headers(self) -> dict[str, str]:
        assert self.token is not None, "onboard() first"
        return {"Authorization": f"Bearer {self.token}"}

    def add_mqtt(self, port: int) -> dict[str, Any]:
        """The MQTT integration's config flow, as in the UI: broker and port."""
        r = httpx.post(
            f"{self.base}/api/config/config_entries/flow",
            json={"handler": "mqtt"},
            headers=self._headers(),
            timeout=30,
        )
        r.raise_for_status()
        flow = r.json()
        r = httpx.post(
            f"{self.base}/api/config/config_entries/flow/{flow['flow_id']}",
            json={"broker": "127.0.0.1", "port": port},
            headers=self._headers(),
            timeout=30,
        )
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        if result.get("type") != "create_entry":
            raise RuntimeError(f"MQTT config flow did not create an entry: {result}")
        return result

    def states(self) -> dict[str, dict[str, Any]]:
        r = httpx.get(f"{self.base}/api/states", headers=self._headers(), timeout=10)
        r.raise_for_status()
        return {s["entity_id"]: s for s in r.json()}

    def state(self, entity_id: str) -> str | None:
        s = self.states().get(entity_id)
        return None if s is None else str(s["state"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


def wait_state(
    ha: HomeAssistant, entity_id: str, want: set[str | None], within: float
) -> str | None:
    """Poll until the entity's state is one of `want` (None: absent); fail after `within` s."""
    deadline = time.monotonic() + within
    seen: list[str | None] = []
    while True:
        state = ha.state(entity_id)
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in want:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{entity_id}: wanted {want} within {within} s, saw {seen}")
        time.sleep(0.2)


def is_number(state: str | None) -> bool:
    try:
        float(state or "")
    except ValueError:
        return False
    return True


def wait_number(ha: HomeAssistant, entity_id: str, within: float) -> float:
    """Poll until the entity's state is a number; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        state = ha.state(entity_id)
        if is_number(state):
            return float(state or "")
        if time.monotonic() > deadline:
            raise AssertionError(f"{entity_id}: no number within {within} s (last {state!r})")
        time.sleep(0.2)

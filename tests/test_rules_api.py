"""POST/DELETE /api/rules on a running daemon: compiled, attached at once, kept across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from support.daemon import StreamdProcess, free_port, wait_for

pytestmark = pytest.mark.slow


def _up(api: str) -> bool:
    try:
        return httpx.get(f"{api}/api/rules", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_rules_added_over_http_fire_and_survive_a_restart(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    api = f"http://{listen}"
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"},
        "api": {"listen": listen},
        "window": {"enabled": False},
        "model": {"detector": {"path": str(tmp_path / "none.onnx"), "url": None}},
        "cameras": {"demo": {"demo": True}},
        "rules": [{"name": "from-file", "text": "a bag is left unattended for 10 s"}],
    }
    proc = StreamdProcess(cfg, tmp_path).start()
    try:
        assert wait_for(lambda: _up(api), 30), proc.log()[-2000:]
        with httpx.Client(base_url=api, timeout=10) as http:
            body = {"name": "moving", "text": "there is motion", "cooldown_s": 0}
            r = http.post("/api/rules", json=body)
            assert r.status_code == 201, r.text
            assert r.json()["plan"] == "motion"
            assert http.post("/api/rules", json=body).status_code == 409
            bad = http.post("/api/rules", json={"name": "x", "text": "a person is dancing"})
            assert bad.status_code == 400
            assert "'dancing'" in bad.json()["detail"]
            cam = http.post("/api/rules", json={"name": "y", "text": "motion", "cameras": ["z"]})
            assert cam.status_code == 400
            assert "unknown camera 'z'" in cam.json()["detail"]
            extra = http.post("/api/rules", json={"name": "w", "text": "motion", "colour": 1})
            assert extra.status_code == 422
            assert http.delete("/api/rules/from-file").status_code == 409
            assert http.delete("/api/rules/nope").status_code == 404

            def fired() -> list[dict[str, Any]]:
                rows: list[dict[str, Any]] = http.get(
                    "/api/events", params={"rule": "moving"}
                ).json()
                return rows

            assert wait_for(fired, 20, interval=0.5), proc.log()[-2000:]
    finally:
        _, rc = proc.terminate()
    assert rc == 0

    again = StreamdProcess(cfg, tmp_path).start()
    try:
        assert wait_for(lambda: _up(api), 30), again.log()[-2000:]
        with httpx.Client(base_url=api, timeout=10) as http:
            listed = {r["name"]: r for r in http.get("/api/rules").json()}
            assert listed["moving"]["source"] == "api"
            assert listed["from-file"]["source"] == "config"
            assert http.delete("/api/rules/moving").status_code == 204
            assert "moving" not in {r["name"] for r in http.get("/api/rules").json()}
    finally:
        _, rc = again.terminate()
    assert rc == 0

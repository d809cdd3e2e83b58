"""Without a detector model the daemon warns once and still finds left objects (scene model)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from conftest import clip_or_skip
from support.clips import DROP_T, UNATTENDED_T, left_object_clip
from support.daemon import StreamdProcess, wait_for

pytestmark = pytest.mark.slow


def _log_time(log: str, needle: str) -> float:
    """Epoch time of the first log line containing `needle` (the log's local-time stamp)."""
    for line in log.splitlines():
        if needle in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.astimezone().timestamp()
    raise AssertionError(f"{needle!r} not in the log:\n{log[-2000:]}")


def test_motion_only_mode_still_alerts_on_a_left_object(tmp_path: Path, clips_dir: Path) -> None:
    clip = clip_or_skip(left_object_clip, clips_dir, bg="static")
    cfg = {
        "data_dir": str(tmp_path / "data"),
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"},
        "api": {"enabled": False},
        # no file here and no URL to fetch from: the detector is unavailable
        "model": {"detector": {"path": str(tmp_path / "missing.onnx"), "url": None}},
        "cameras": {"replay": {"file": str(clip)}},
        "rules": [{"name": "left", "text": "an object is left unattended for 4 seconds"}],
    }
    proc = StreamdProcess(cfg, tmp_path).start()
    try:

        def events() -> list[dict[str, object]]:
            out = proc.cli("events", "-c", str(proc.config_path), "--json")
            if out.returncode == 2 and (
                "no database at" in out.stderr or "schema none" in out.stderr
            ):
                return []  # `events` only reads: the daemon has not created the database yet
            assert out.returncode == 0, out.stderr
            rows: list[dict[str, object]] = json.loads(out.stdout)
            return rows

        rows = wait_for(events, timeout=30, interval=1.0)
        assert rows, proc.log()[-3000:]
        start = float(rows[0]["start_time"])  # type: ignore[arg-type]
        # the file replays in real time from its first frame: the bag is dropped at t=5 s and
        # its carrier is two bag widths away from ≈7.5 s, when the event starts
        first = _log_time(proc.log(), "camera replay: receiving frames")
        assert abs(start - (first + UNATTENDED_T)) <= 2.0, (start - first, proc.log()[-2000:])
        details = rows[0]["details"]
        assert isinstance(details, dict)
        assert abs(details["placed_at"] - (first + DROP_T)) <= 2.0, details
    finally:
        proc.terminate()
    log = proc.log()
    assert log.count("no object detector") == 1
    assert "motion and static-scene analysis only" in log

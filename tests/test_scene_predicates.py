"""Scene predicates ("a fire truck is here", "smoke or fire"): candidates come from the camera's
window tokens, scored with the window's own text model, against an adaptive per-camera
baseline. Uses the real offline objects encoder (MiniLM captions) and a real CameraWindow on
disk; the world states are built by hand (what the world model would report)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.world import track, world

from streamd.config import RuleConfig, WindowConfig
from streamd.perception.geometry import Box
from streamd.rules.compiler import compile_rule
from streamd.rules.engine import RuleRunner
from streamd.window.camera_window import CameraWindow
from streamd.window.encoders import ObjectsBackend, load_backend
from streamd.window.scene_score import WindowSceneScorer


@pytest.fixture(scope="module")
def backend() -> ObjectsBackend:
    b = load_backend(WindowConfig())
    assert isinstance(b, ObjectsBackend)
    return b


def test_scene_candidates_come_from_unusual_window_scores(
    tmp_path: Path, backend: ObjectsBackend
) -> None:
    window = CameraWindow("yard", tmp_path / "w", backend, 100_000, WindowConfig())
    scorer = WindowSceneScorer(window)
    text = "a truck in the yard"
    plan = compile_rule(text, structured={"root": {"kind": "scene", "text": "a truck in the yard"}})
    assert plan.needs_verifier()
    runner = RuleRunner("yard", RuleConfig(name="truck", text=text), plan, None, scorer)
    fired = []
    for i in range(40):
        t = 1000.0 + i
        # a quiet yard with a cat moving about; a truck turns up at i = 30
        tracks = [track(1, Box(10 + i, 10, 60 + i, 60), t, label="cat", moving=True)]
        if i >= 30:
            tracks.append(track(2, Box(200, 20, 380, 110), t, label="truck"))
        w = world(t, tracks, motion=0.02)
        window.add(w)  # the window encodes the frame (in the daemon: in its own task)
        fired += [(i, ch.details) for ch in runner.step(w) if ch.kind == "new"]
    window.close()
    assert [i for i, _ in fired] == [30]
    details = fired[0][1]
    assert details["scene_score"] > details["scene_baseline"]


def test_without_a_window_scene_candidates_fall_back_to_motion() -> None:
    plan = compile_rule("x", structured={"root": {"kind": "scene", "text": "smoke or fire"}})
    runner = RuleRunner("yard", RuleConfig(name="smoke", text="smoke or fire"), plan)
    still = [runner.step(world(1000.0 + i, [], motion=0.0)) for i in range(3)]
    moving = runner.step(world(1003.0, [], motion=0.05))
    assert still == [[], [], []]
    assert [c.kind for c in moving] == ["new"]

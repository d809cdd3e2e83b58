"""The clip encoder end to end with real transformers classes, and search through the HTTP API
and the CLI, including the clear 4xx / exit 2 answers to bad queries.

The CLIP and SigLIP models are tiny and randomly initialised (hidden size 32, two layers),
built from their configs and written with `save_pretrained`, then loaded by the product's own
`from_pretrained` path, exactly as a downloaded checkpoint would be. Their embeddings mean
nothing, so these tests check the plumbing (encode, store, persist, search, serve), not what
the model understands; the objects encoder's semantics are tested in test_window_encoders.py
and on real footage in test_window_e2e.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamd.config import Config, WindowConfig
from streamd.ingest.frame import Frame
from streamd.perception.world import WorldState
from streamd.window.camera_window import CameraWindow
from streamd.window.clip_encoder import ClipBackend
from streamd.window.encoders import load_backend
from streamd.window.search import WindowSearch, open_persisted

T0 = 1_800_000_000.0
N_FRAMES = 8


def build_tiny_model(kind: str, out: Path) -> Path:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPTokenizer,
        SiglipConfig,
        SiglipModel,
    )

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text = {**tower, "num_attention_heads": 2, "vocab_size": len(vocab)}
    vision = {**tower, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    model: Any
    if kind == "clip":
        text |= {"max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1}
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    else:
        text |= {"max_position_embeddings": 16}
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if kind == "clip":  # SigLIP is left without one: the OpenAI normalisation is the fallback
        (out / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "image_processor_type": "CLIPImageProcessor",
                    "image_mean": [0.5] * 3,
                    "image_std": [0.25] * 3,
                }
            )
        )
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: build_tiny_model(kind, root / f"tiny-{kind}") for kind in ("clip", "siglip")}


def frame_image(i: int) -> np.ndarray:
    """Distinct frames: a coloured block moving over a gradient."""
    img = np.zeros((120, 200, 3), np.uint8)
    img[:, :, 0] = np.linspace(0, 255, 200, dtype=np.uint8)[None, :]
    img[:, :, 1] = (37 * i) % 256
    x = 20 * i
    img[30:90, x : x + 40] = ((50 * i) % 256, 255 - 30 * i, 90)
    return img


def observation(i: int, analysed: bool = True) -> WorldState:
    """An empty scene as the world model reports it: the clip encoder reads only the frame."""
    frame = Frame("cam", frame_image(i), T0 + i, float(i), i)
    return WorldState(frame, analysed, (), (), 0.0, 0.0, 100.0)


def clip_config(model: Path, **extra: Any) -> WindowConfig:
    return WindowConfig.model_validate(
        {"encoder": "clip", "clip": {"model": str(model), "grid": 2}, **extra}
    )


def fill(window: CameraWindow) -> None:
    for i in range(N_FRAMES):
        window.add(observation(i))
        window.add(observation(i, analysed=False))  # gated: no tokens


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_tiny_clip_encode_store_persist_search(
    kind: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model = tiny_models[kind]
    cfg = clip_config(model, thumbnail_width=64)
    backend = load_backend(cfg)
    assert isinstance(backend, ClipBackend)
    assert backend.name == f"clip:{model.name}"
    assert backend.dim == (16 if kind == "clip" else 32)
    assert backend.siglip is (kind == "siglip")

    win = CameraWindow("cam", tmp_path / "window" / "cam", backend, 10_000, cfg)
    fill(win)
    d = win.describe()
    assert d["tokens"] == 5 * N_FRAMES
    assert d["tokens_per_frame"] == 5.0
    assert d["kind"] == "clip"
    assert d["dim"] == backend.dim
    assert d["errors"] == 0

    # the image of frame 3 as the query: frame 3's global token is the best match
    q = backend.embed_images([frame_image(3)])[0]
    (best,) = win.search(q, limit=1)
    assert best.best_time == T0 + 3
    assert best.kind == 2
    assert best.score == pytest.approx(1.0, abs=0.02)

    # text through the text tower: finite scores, every token kind searchable
    text_q = backend.embed_text("a red car")
    assert text_q.shape == (backend.dim,)
    assert np.linalg.norm(text_q) == pytest.approx(1.0, abs=1e-4)
    search = WindowSearch(backend, {"cam": win})
    result = search.search("a red car", limit=3)
    assert result.moments
    assert all(np.isfinite(m.score) for m in result.moments)
    top = result.moments[0]
    assert search.snapshot_path("cam", top.frame_id) is not None
    win.close()

    # the persisted window answers the same, through the read-only snapshot
    config = Config.model_validate(
        {
            "data_dir": str(tmp_path),
            "cameras": {"cam": {"file": "x.mp4"}},
            "window": cfg.model_dump(),
        }
    )
    with open_persisted(config, backend) as disk:
        again = disk.search("a red car", limit=3)
    assert [(m.start, m.end, m.best_time) for m in again.moments] == [
        (m.start, m.end, m.best_time) for m in result.moments
    ]
    assert [m.score for m in again.moments] == pytest.approx([m.score for m in result.moments])


def test_clip_tiles_cover_the_frame(tiny_models: dict[str, Path]) -> None:
    from streamd.window.clip_encoder import frame_views

    views, boxes, captions = frame_views(frame_image(1), 2)
    assert [v.shape[:2] for v in views] == [(120, 200)] + [(60, 100)] * 4
    assert captions == ["whole frame", "top left tile", "top right tile", "bottom left tile",
                        "bottom right tile"]  # fmt: skip
    assert sum(b.area for b in boxes[1:]) == boxes[0].area


def test_a_model_without_towers_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from streamd.errors import ModelError

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(ModelError, match="no image and text towers"):
        ClipBackend(str(tmp_path))
    with pytest.raises(ModelError, match="cannot load CLIP model"):
        ClipBackend(str(tmp_path / "missing"))


# -- HTTP API ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_window(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, WindowConfig, CameraWindow]]:
    root = tmp_path_factory.mktemp("data")
    cfg = clip_config(tiny_models["clip"], thumbnail_width=64)
    win = CameraWindow("cam", root / "window" / "cam", load_backend(cfg), 10_000, cfg)
    fill(win)
    yield root, cfg, win
    win.close()


def api_client(search: WindowSearch | None) -> Any:
    from fastapi.testclient import TestClient

    from streamd.api import ApiState, create_app

    config = Config.model_validate({"cameras": {"cam": {"file": "x.mp4"}}})
    state = ApiState(config, None, {}, {}, search=search)  # type: ignore[arg-type]
    return TestClient(create_app(state))


def test_api_search_and_snapshot(clip_window: tuple[Path, WindowConfig, CameraWindow]) -> None:
    _, _, win = clip_window
    with api_client(WindowSearch(win.backend, {"cam": win})) as client:
        r = client.get("/api/search", params={"q": "a red car", "limit": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == "a red car"
        assert body["cameras"] == ["cam"]
        assert 1 <= len(body["moments"]) <= 3
        assert body["took_ms"] >= 0
        m = body["moments"][0]
        for key in ("start", "end", "best_time", "start_iso", "best_time_iso", "score",
                    "caption", "camera", "frame_id", "kind", "hits"):  # fmt: skip
            assert key in m
        assert m["start"] <= m["best_time"] <= m["end"]
        assert m["snapshot"] == f"/api/search/snapshot/cam/{m['frame_id']}.jpg"
        snap = client.get(m["snapshot"])
        assert snap.status_code == 200
        assert snap.headers["content-type"] == "image/jpeg"
        assert snap.content[:2] == b"\xff\xd8"
        # time range: only the frames in it
        r = client.get("/api/search", params={"q": "x", "since": T0 + 2, "until": T0 + 4})
        assert all(T0 + 2 <= m["start"] <= m["end"] <= T0 + 4 for m in r.json()["moments"])
        assert client.get("/api/search/snapshot/cam/12345.jpg").status_code == 404
        assert client.get("/api/search/snapshot/nope/12345.jpg").status_code == 404


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({}, 400, "empty query"),
        ({"q": "   "}, 400, "empty query"),
        ({"q": "x" * 600}, 400, "at most 500"),
        ({"q": "a car", "camera": "nope"}, 404, "unknown camera 'nope'"),
        ({"q": "a car", "since": "1h", "until": "2h"}, 400, "inverted time range"),
        ({"q": "a car", "since": "yesterday-ish"}, 400, "since: cannot read time"),
        ({"q": "a car", "limit": 0}, 422, "greater than or equal to 1"),
    ],
)
def test_api_bad_queries_are_clear_4xx(
    clip_window: tuple[Path, WindowConfig, CameraWindow],
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    _, _, win = clip_window
    with api_client(WindowSearch(win.backend, {"cam": win})) as client:
        r = client.get("/api/search", params=params)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"])


def test_api_search_when_window_disabled() -> None:
    with api_client(None) as client:
        r = client.get("/api/search", params={"q": "a car"})
    assert r.status_code == 503
    assert "disabled" in r.json()["detail"]


# -- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Run `streamd` in-process; returns (exit code, stdout, stderr)."""
    from streamd.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def run(*args: str) -> tuple[int, str, str]:
        rc = main(["--log-level", "WARNING", *args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    yield run
    root.handlers[:], root.level = handlers, level  # main() installs its own handler


def write_config(path: Path, data_dir: Path, window: WindowConfig) -> Path:
    from support.daemon import free_port

    doc = {
        "data_dir": str(data_dir),
        "api": {"listen": f"127.0.0.1:{free_port()}"},  # no daemon there: search on disk
        "cameras": {"cam": {"file": "x.mp4"}, "other": {"file": "y.mp4"}},
        "window": json.loads(window.model_dump_json()),
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_cli_searches_the_persisted_window(
    clip_window: tuple[Path, WindowConfig, CameraWindow], tmp_path: Path, cli: Any
) -> None:
    root, cfg, win = clip_window
    win.flush()  # what a daemon's shutdown (or flush_s) leaves on disk
    config = write_config(tmp_path / "streamd.yaml", root, cfg)
    rc, out, err = cli("search", "a red car", "-c", str(config), "--json", "--limit", "3")
    assert rc == 0, err
    body = json.loads(out)
    assert body["source"].startswith("persisted window")
    assert body["cameras"] == ["cam"]  # `other` has nothing persisted yet
    assert body["moments"]
    assert Path(body["moments"][0]["snapshot"]).is_file()
    rc, out, err = cli("search", "a red car", "-c", str(config), "--camera", "cam")
    assert rc == 0, err
    assert "moment(s) for 'a red car' in cam" in out
    assert "snapshot:" in out
    rc, out, _ = cli("search", "a red car", "-c", str(config), "--camera", "other", "--offline")
    assert rc == 0
    assert "0 moment(s)" in out
    assert not list((root / "window" / ".readers").iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["", ], "empty query"),
        (["a car", "--camera", "nope"], "unknown camera 'nope'"),
        (["a car", "--since", "1h", "--until", "2h"], "inverted time range"),
        (["a car", "--since", "bogus"], "--since: cannot read time"),
        (["a car", "--limit", "0"], "limit must be between 1 and 1000"),
    ],
)  # fmt: skip
def test_cli_bad_queries_exit_2(
    args: list[str], message: str, tmp_path: Path, tiny_models: dict[str, Path], cli: Any
) -> None:
    config = write_config(tmp_path / "streamd.yaml", tmp_path, clip_config(tiny_models["clip"]))
    rc, out, err = cli("search", *args, "-c", str(config))
    assert rc == 2
    assert message in err
    assert err.startswith("error: ")
    assert out == ""


def test_query_module_stays_light_and_in_step_with_the_store() -> None:
    import subprocess
    import sys

    from streamd.window import query
    from streamd.window.store import TokenKind

    assert tuple(k.name.lower() for k in sorted(TokenKind)) == query._KINDS
    # the daemon and the API import it: no torch before the database is upgraded
    code = "import sys, streamd.daemon, streamd.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The VLM verifier (streamd.verify) against a local OpenAI-compatible server and a tiny model.

The server is a STAND-IN: no real VLM (vLLM, Ollama, llama.cpp serving Qwen-VL) can run on this
machine, so a small Starlette app served by uvicorn on 127.0.0.1 speaks the chat-completions
schema, records every request and answers what each test scripts (a verdict, a fenced verdict,
a delay past the timeout, an HTTP 500). The transformers backend is exercised with a tiny
randomly initialised LLaVA that the test builds and saves (tests/support/tiny_vlm.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from support.tiny_vlm import build_tiny_llava
from support.vlm_server import VlmServer, serve_vlm, verdict_json

from streamd.errors import ModelError
from streamd.perception.geometry import Box
from streamd.verify import (
    RATE_LIMITED,
    Candidate,
    RuleVerifyConfig,
    VerdictParseError,
    VerifyConfig,
    load_verifier,
    parse_verdict,
)
from streamd.verify.prompt import build_prompt
from streamd.verify.transformers_backend import TransformersBackend

KEY = "sk-test-5d1f0c9a-never-log-me"
RULE = "a person climbs the fence"
BOX = Box(200.0, 100.0, 600.0, 500.0)


@pytest.fixture(scope="module")
def vlm_server_module() -> Iterator[VlmServer]:
    with serve_vlm() as server:
        yield server


@pytest.fixture
def vlm(vlm_server_module: VlmServer) -> VlmServer:
    vlm_server_module.script.reset()
    return vlm_server_module


def openai_cfg(url: str, **over: Any) -> VerifyConfig:
    openai = {"base_url": url, "model": "qwen2.5-vl-stand-in", "timeout_s": 10.0}
    openai.update(over.pop("openai", {}))
    return VerifyConfig.model_validate({"backend": "openai", "openai": openai, **over})


def frame(w: int = 1280, h: int = 720, value: int = 90) -> np.ndarray[Any, np.dtype[np.uint8]]:
    img = np.full((h, w, 3), value, np.uint8)
    img[:, : w // 2, 1] = 140  # not uniform, so a resize is visible in the pixels
    return img


def candidate(camera: str = "yard", n_frames: int = 3) -> Candidate:
    return Candidate(
        camera=camera,
        rule_name="fence-climb",
        rule_text=RULE,
        ts=1_700_000_000.0,
        frames=tuple(frame(value=60 + 10 * i) for i in range(n_frames)),
        boxes=(("person", BOX),),
    )


PUBLISH = RuleVerifyConfig(enabled=True, on_failure="publish")


def decode_data_url(url: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix), url[:40]
    buf = np.frombuffer(base64.b64decode(url[len(prefix) :], validate=True), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert img is not None, "the data URL is not a decodable JPEG"
    return np.asarray(img, np.uint8)


# --- the request ---------------------------------------------------------------------------


async def test_request_carries_rule_frames_schema_and_key(
    vlm: VlmServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("STREAMD_VLM_API_KEY", KEY)
    vlm.script.reply = verdict_json(True, 0.87, "a person is half over the fence")
    cfg = openai_cfg(vlm.url, frames=2, max_side_px=320)
    assert cfg.openai is not None
    assert cfg.openai.api_key is not None
    async with load_verifier(cfg) as verifier:
        result = await verifier.verify(candidate(n_frames=5), PUBLISH)
        stats = verifier.describe()
        text_of_verifier = repr(verifier)

    assert (result.verdict, result.confidence, result.error) == ("confirmed", 0.87, None)
    assert result.explanation == "a person is half over the fence"
    assert result.backend == "openai:qwen2.5-vl-stand-in"
    assert "confirmed (0.87)" in result.description

    (req,) = vlm.script.requests
    body, headers = req["body"], req["headers"]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert body["model"] == "qwen2.5-vl-stand-in"
    assert body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert set(schema["required"]) == {"match", "confidence", "explanation"}
    assert schema["additionalProperties"] is False
    system, user = body["messages"]
    assert system["role"] == "system"
    assert '"match"' in system["content"]
    texts = [p["text"] for p in user["content"] if p["type"] == "text"]
    urls = [p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url"]
    assert any(RULE in t for t in texts)
    assert len(urls) == 2  # cfg.frames of the 5 in the candidate

    img = decode_data_url(urls[0])
    h, w = img.shape[:2]
    assert max(h, w) <= 320
    assert (w, h) == (320, 180)
    scale = 320 / 1280
    # Middle of the box's left edge: the red outline (JPEG-tolerant); inside it: the scene.
    edge = img[round((BOX.y1 + BOX.y2) / 2 * scale), round(BOX.x1 * scale)].astype(int)
    inside = img[round((BOX.y1 + BOX.y2) / 2 * scale), round((BOX.x1 + BOX.x2) / 2 * scale)]
    b, g, r = edge
    assert min(r - 180, 90 - g, 90 - b) > 0, f"no red box edge: BGR {edge.tolist()}"
    assert abs(int(inside[2]) - int(inside[0])) < 30, f"box is filled: BGR {inside.tolist()}"

    # The key is in the Authorization header only: not in logs, reprs, results or stats.
    for text in (caplog.text, repr(cfg), str(cfg.model_dump()), text_of_verifier, repr(result)):
        assert KEY not in text
    assert KEY not in json.dumps(stats)
    assert KEY not in json.dumps(result.as_dict())
    assert stats["calls"] == 1
    assert stats["confirmed"] == 1
    assert stats["failures"] == 0
    assert stats["mean_latency_s"] is not None


async def test_no_key_no_authorization_header(
    vlm: VlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMD_VLM_API_KEY", raising=False)
    vlm.script.reply = verdict_json(True)
    async with load_verifier(openai_cfg(vlm.url, openai={"json_schema": False})) as verifier:
        assert (await verifier.verify(candidate(), PUBLISH)).verdict == "confirmed"
    (req,) = vlm.script.requests
    assert "authorization" not in req["headers"]
    assert "response_format" not in req["body"]


# --- verdicts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "match", "confidence"),
    [
        ('{"match": true, "confidence": 0.8, "explanation": "a man on the fence"}', True, 0.8),
        ('```json\n{"match": false, "confidence": 0.7, "explanation": "empty"}\n```', False, 0.7),
        (
            'Sure! Here is my verdict:\n{"match": true, "confidence": 1, "explanation": "yes"}',
            True,
            1,
        ),
        (
            '{"match": "false", "confidence": "0.25", "explanation": "no", "reasoning": "…"}',
            False,
            0.25,
        ),
        ('{"note": 1} then {"match": true, "confidence": 0.5, "explanation": "second"}', True, 0.5),
    ],
)
def test_parse_verdict_lenient(reply: str, match: bool, confidence: float) -> None:
    verdict = parse_verdict(reply)
    assert (verdict.match, verdict.confidence) == (match, confidence)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("I think there is a person climbing.", "holds no JSON object"),
        ("", "holds no JSON object"),
        ('{"match": true, "confidence": 1.5, "explanation": "x"}', "confidence"),
        ('{"confidence": 0.5, "explanation": "x"}', "match: Field required"),
        ('```json\n{"match": tru\n```', "holds no JSON object"),
    ],
)
def test_parse_verdict_errors(reply: str, message: str) -> None:
    with pytest.raises(VerdictParseError, match=message):
        parse_verdict(reply)


async def test_rejected_from_a_fenced_reply(vlm: VlmServer) -> None:
    vlm.script.reply = (
        "Looking at the frames:\n```json\n"
        + verdict_json(False, 0.66, "the person stands next to the fence")
        + "\n```"
    )
    async with load_verifier(openai_cfg(vlm.url)) as verifier:
        result = await verifier.verify(candidate(), PUBLISH)
        stats = verifier.describe()
    assert (result.verdict, result.confidence, result.error) == ("rejected", 0.66, None)
    assert result.explanation == "the person stands next to the fence"
    assert (stats["rejected"], stats["failures"]) == (1, 0)


async def test_unparseable_reply_follows_policy(vlm: VlmServer) -> None:
    vlm.script.reply = "Yes, someone is climbing."
    async with load_verifier(openai_cfg(vlm.url)) as verifier:
        pub = await verifier.verify(candidate(), PUBLISH)
        drop = await verifier.verify(candidate(), RuleVerifyConfig(enabled=True, on_failure="drop"))
    assert pub.verdict == "unverified"
    assert "no JSON object" in (pub.error or "")
    assert drop.verdict == "rejected"
    assert "no JSON object" in (drop.error or "")


# --- failures and policies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_failure", "verdict"),
    [("publish", "unverified"), ("drop", "rejected"), ("hold", "unverified")],
)
async def test_timeout_follows_policy(vlm: VlmServer, on_failure: str, verdict: str) -> None:
    vlm.script.reply = verdict_json(True)
    vlm.script.delay_s = 5.0  # far past the 0.2 s timeout
    cfg = openai_cfg(vlm.url, openai={"timeout_s": 0.2})
    policy = RuleVerifyConfig.model_validate(
        {"enabled": True, "on_failure": on_failure, "hold_s": 1.0}
    )
    async with load_verifier(cfg, retry_delay_s=0.05) as verifier:
        async with asyncio.timeout(15):  # a hang guard, not a timing assertion
            result = await verifier.verify(candidate(), policy)
        stats = verifier.describe()
    assert result.verdict == verdict
    assert result.error is not None
    assert "timed out after" in result.error
    assert result.confidence is None
    if on_failure == "hold":
        # retried until hold_s ran out, each attempt a new request
        assert len(vlm.script.requests) >= 2
        assert f"after {len(vlm.script.requests)} attempts" in result.error
        assert stats["failures"] == len(vlm.script.requests)
    else:
        assert len(vlm.script.requests) == 1
        assert stats["failures"] == 1
    assert stats["unverified" if verdict == "unverified" else "rejected"] == 1


async def test_hold_recovers_when_the_server_comes_back(vlm: VlmServer) -> None:
    vlm.script.status = 500
    vlm.script.reply = verdict_json(True, 0.8, "climbing")
    policy = RuleVerifyConfig(enabled=True, on_failure="hold", hold_s=30)
    async with load_verifier(openai_cfg(vlm.url), retry_delay_s=0.05) as verifier:
        task = asyncio.create_task(verifier.verify(candidate(), policy))
        deadline = time.monotonic() + 10
        while len(vlm.script.requests) < 2:  # it is retrying
            assert time.monotonic() < deadline
            assert not task.done()
            await asyncio.sleep(0.01)
        vlm.script.status = 200
        async with asyncio.timeout(15):
            result = await task
    assert result.verdict == "confirmed"
    assert result.error is None


async def test_http_500_is_a_failure(vlm: VlmServer) -> None:
    vlm.script.status = 500
    async with load_verifier(openai_cfg(vlm.url)) as verifier:
        result = await verifier.verify(candidate(), PUBLISH)
        stats = verifier.describe()
    assert result.verdict == "unverified"
    assert result.error is not None
    assert "HTTP 500" in result.error
    assert "model crashed" in result.error
    assert "unverified" in result.description
    assert stats["failures"] == 1
    assert "HTTP 500" in stats["last_error"]


async def test_unreachable_server_is_a_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = openai_cfg(f"http://127.0.0.1:{port}/v1")
    async with load_verifier(cfg) as verifier:
        result = await verifier.verify(
            candidate(), RuleVerifyConfig(enabled=True, on_failure="drop")
        )
    assert result.verdict == "rejected"
    assert result.error is not None
    assert "ConnectError" in result.error


# --- limits ----------------------------------------------------------------------------------


async def test_rate_limit_is_per_camera(vlm: VlmServer) -> None:
    vlm.script.reply = verdict_json(True)
    now = [1000.0]
    cfg = openai_cfg(vlm.url, rate_per_camera_per_min=2)
    async with load_verifier(cfg, clock=lambda: now[0]) as verifier:
        yard = [await verifier.verify(candidate("yard"), PUBLISH) for _ in range(3)]
        gate = await verifier.verify(candidate("gate"), PUBLISH)
        now[0] += 30.0  # 2 per minute: one token back after 30 s
        yard_later = await verifier.verify(candidate("yard"), PUBLISH)
        stats = verifier.describe()
    assert [r.verdict for r in yard] == ["confirmed", "confirmed", "unverified"]
    assert yard[2].error == RATE_LIMITED
    assert gate.verdict == "confirmed"  # another camera is not held back
    assert yard_later.verdict == "confirmed"
    assert len(vlm.script.requests) == 4  # the limited call never reached the server
    assert stats["rate_limited"] == 1
    assert stats["calls"] == 5


async def test_concurrency_is_bounded(vlm: VlmServer) -> None:
    vlm.script.reply = verdict_json(True)
    vlm.script.delay_s = 0.3
    cfg = openai_cfg(vlm.url, max_concurrency=2)
    async with load_verifier(cfg) as verifier:
        results = await asyncio.gather(
            *(verifier.verify(candidate(f"cam{i}"), PUBLISH) for i in range(6))
        )
        stats = verifier.describe()
    assert [r.verdict for r in results] == ["confirmed"] * 6
    assert len(vlm.script.requests) == 6
    assert vlm.script.max_concurrent == 2
    assert stats["in_flight"] == 0


# --- prompt and config -----------------------------------------------------------------------


def test_prompt_picks_spread_frames_and_keeps_small_frames() -> None:
    frames = tuple(frame(64, 48, value=v) for v in (10, 50, 90, 130, 170))
    cand = Candidate("yard", "r", RULE, 0.0, frames, (("person", Box(5, 5, 40, 40)),))
    prompt = build_prompt(cand, frames=3, max_side_px=768)
    assert [im.shape[:2] for im in prompt.images] == [(48, 64)] * 3
    assert [int(im[30, 50, 0]) for im in prompt.images] == [10, 90, 170]  # first, middle, last
    assert RULE in prompt.question
    with pytest.raises(ValueError, match="carries no frames"):
        build_prompt(Candidate("yard", "r", RULE, 0.0, ()), frames=3, max_side_px=768)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"backend": "openai"}, "needs its section: verify.openai"),
        ({"backend": "transformers", "openai": {"model": "m"}}, "verify.transformers"),
        ({"backend": "openai", "openai": {"model": "m", "base_url": "ftp://x/v1"}}, "base_url"),
        ({"backend": "openai", "openai": {"model": "m", "apikey": "k"}}, "apikey"),
        ({"backend": "openai", "openai": {"model": "m"}, "max_concurrency": 0}, "max_concurrency"),
        ({"backend": "ollama"}, "backend"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VerifyConfig.model_validate(raw)


def test_config_defaults_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMD_VLM_API_KEY", raising=False)
    cfg = VerifyConfig.model_validate({"openai": {"model": "qwen", "api_key": KEY}})
    assert (cfg.backend, cfg.max_concurrency, cfg.rate_per_camera_per_min) == ("openai", 2, 6)
    assert (cfg.frames, cfg.max_side_px) == (3, 768)
    assert KEY not in repr(cfg)
    assert KEY not in str(cfg.model_dump())
    rule = RuleVerifyConfig()
    assert (rule.enabled, rule.on_failure, rule.hold_s) == (False, "publish", 30)
    with pytest.raises(ValidationError, match="on_failure"):
        RuleVerifyConfig.model_validate({"on_failure": "retry"})


# --- the transformers backend with a tiny model the test builds ------------------------------


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


async def test_transformers_backend_end_to_end(tiny_vlm: Path) -> None:
    cfg = VerifyConfig.model_validate(
        {
            "backend": "transformers",
            "transformers": {"model": str(tiny_vlm), "device": "cpu", "max_new_tokens": 12},
            "frames": 2,
            "max_side_px": 96,
        }
    )
    async with load_verifier(cfg) as verifier:
        backend = verifier.backend
        assert backend.name == f"transformers:{tiny_vlm.name}"
        prompt = build_prompt(candidate(), 2, 96)
        # Both frames reach the model: two pixel tensors, and 16 image tokens for each
        # (4x4 patches of the 32 px tower) in the templated prompt.
        assert isinstance(backend, TransformersBackend)
        inputs = backend.encode(prompt)
        assert tuple(inputs["pixel_values"].shape) == (2, 3, 32, 32)
        from transformers import AutoProcessor

        image_id = AutoProcessor.from_pretrained(tiny_vlm).image_token_id
        assert int((inputs["input_ids"] == image_id).sum()) == 2 * 16
        # The raw generation: text from the random model, through processor and generate().
        reply = await backend.judge(prompt)
        assert isinstance(reply, str)
        # A random model writes noise, not a verdict: parsing fails honestly ...
        with pytest.raises(VerdictParseError):
            parse_verdict(reply)
        # ... and the rule's policy applies.
        published = await verifier.verify(candidate(), PUBLISH)
        dropped = await verifier.verify(
            candidate(), RuleVerifyConfig(enabled=True, on_failure="drop")
        )
        stats = verifier.describe()
    assert published.verdict == "unverified"
    assert dropped.verdict == "rejected"
    assert published.backend == f"transformers:{tiny_vlm.name}"
    assert published.error is not None
    assert "JSON" in published.error
    assert stats["failures"] == 2


async def test_transformers_backend_missing_model(tmp_path: Path) -> None:
    cfg = VerifyConfig.model_validate(
        {"backend": "transformers", "transformers": {"model": str(tmp_path / "none")}}
    )
    backend = TransformersBackend(cfg.transformers)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="cannot load VLM"):
        await backend.start()


class _BrokenBackend:
    """A backend with a bug (no real backend raises this on purpose): the camera must survive."""

    name = "broken:test"

    async def start(self) -> None:
        return None

    async def judge(self, prompt: Any) -> str:
        raise RuntimeError("index out of range in the backend")

    async def aclose(self) -> None:
        return None


async def test_unexpected_backend_error_follows_policy(caplog: pytest.LogCaptureFixture) -> None:
    from streamd.verify import Verifier

    cfg = openai_cfg("http://127.0.0.1:9/v1")
    async with Verifier(cfg, _BrokenBackend()) as verifier:
        result = await verifier.verify(candidate(), PUBLISH)
    assert result.verdict == "unverified"
    assert result.error == "RuntimeError: index out of range in the backend"
    assert "raised unexpectedly" in caplog.text

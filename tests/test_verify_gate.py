"""The verify stage between rules and events (streamd.verify.gate), with the real Verifier
talking to the stand-in OpenAI-compatible server (tests/support/vlm_server.py: no real VLM can
run on this machine). Checks that a verified event's changes go out in order carrying the
verdict, a rejected event disappears whole, a verifier that times out follows the rule's
policy, and rules without verification pass straight through."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from support.vlm_server import VlmServer, serve_vlm, verdict_json

from streamd.events.change import EventChange, Snapshot
from streamd.perception.geometry import Box
from streamd.verify import RuleVerifyConfig, VerifyConfig, load_verifier
from streamd.verify.gate import VerifyGate


@pytest.fixture(scope="module")
def vlm_module() -> Iterator[VlmServer]:
    with serve_vlm() as server:
        yield server


@pytest.fixture
def vlm(vlm_module: VlmServer) -> VlmServer:
    vlm_module.script.reset()
    return vlm_module


def _change(kind: str, eid: str = "e1", rule: str = "fence") -> EventChange:
    img = np.full((240, 320, 3), 80, np.uint8)
    snap = (
        Snapshot(img, (("person", Box(10, 10, 100, 200)),), (img, img)) if kind == "new" else None
    )
    return EventChange(
        kind=kind,  # type: ignore[arg-type]
        event_id=eid,
        camera="yard",
        rule_name=rule,
        rule_text="a person climbs the fence",
        start_time=1000.0,
        end_time=1010.0 if kind == "end" else None,
        score=0.8,
        top_score=0.8,
        snapshot=snap,
    )


POLICIES = {
    "fence": RuleVerifyConfig(enabled=True, on_failure="publish"),
    "strict": RuleVerifyConfig(enabled=True, on_failure="drop"),
}


async def _run(
    vlm: VlmServer, changes: list[EventChange], timeout_s: float = 5.0
) -> list[EventChange]:
    cfg = VerifyConfig.model_validate(
        {"backend": "openai", "openai": {"base_url": vlm.url, "model": "m", "timeout_s": timeout_s}}
    )
    out: list[EventChange] = []

    async def sink(change: EventChange) -> None:
        out.append(change)

    async with load_verifier(cfg) as verifier, VerifyGate(verifier, POLICIES.get, sink) as gate:
        for ch in changes:
            await gate.submit(ch)
            await asyncio.sleep(0)  # let the verification task start, as a live camera would
    return out


async def test_confirmed_event_goes_out_in_order_with_the_verdict(vlm: VlmServer) -> None:
    vlm.script.reply = verdict_json(True, 0.9, "someone is halfway over the fence")
    out = await _run(vlm, [_change("new"), _change("update"), _change("end")])
    assert [c.kind for c in out] == ["new", "update", "end"]
    for c in out:
        assert c.description == "confirmed (0.90): someone is halfway over the fence"
        assert c.details["verification"]["verdict"] == "confirmed"
    assert len(vlm.script.requests) == 1  # one verification per event


async def test_rejected_event_is_dropped_with_its_later_changes(vlm: VlmServer) -> None:
    vlm.script.reply = verdict_json(False, 0.8, "a tree branch moving")
    out = await _run(vlm, [_change("new"), _change("update"), _change("end")])
    assert out == []


async def test_timeout_follows_the_rule_policy(vlm: VlmServer) -> None:
    vlm.script.reply = verdict_json(True)
    vlm.script.delay_s = 2.0
    out = await _run(
        vlm,
        [_change("new", "a"), _change("end", "a"), _change("new", "b", "strict")],
        timeout_s=0.3,
    )
    # publish → the event goes out marked unverified; drop → it is treated as rejected
    assert [(c.event_id, c.kind) for c in out] == [("a", "new"), ("a", "end")]
    assert out[0].description is not None
    assert out[0].description.startswith("unverified")


async def test_rules_without_verification_pass_straight_through(vlm: VlmServer) -> None:
    out = await _run(vlm, [_change("new", rule="other"), _change("end", rule="other")])
    assert [c.kind for c in out] == ["new", "end"]
    assert out[0].description is None
    assert vlm.script.requests == []

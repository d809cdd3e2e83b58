"""GET /api/cameras: each camera's health and counters (the contract's fields and more)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from streamd.api.errors import responses
from streamd.api.state import Authorized, State

router = APIRouter(tags=["cameras"], dependencies=Authorized)


@router.get("/api/cameras", summary="Camera health and counters", responses=responses())
async def cameras(st: State) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in st.pipelines.items():
        cam = p.camera
        p50, p95 = p.latency.quantiles()
        out[name] = {
            "source": cam.spec.display,
            "online": cam.health.online,
            "fps": p.config.fps,
            "width": cam.stats.width,
            "height": cam.stats.height,
            "decoded_frames": cam.stats.decoded,
            "demuxed_frames": cam.stats.demuxed,
            "sampled_frames": cam.stats.sampled,
            "keyframe_interval_s": _seconds(cam.stats.keyframe_interval_s),
            "decode_mode": cam.stats.decode_mode,
            "dropped_frames": cam.dropped,
            "analysed_frames": p.perception.stats.analysed,
            "gated_frames": p.perception.stats.gated,
            # Back-pressure: what the camera asks for, what analysis delivered over the last
            # seconds, and the frames it skipped to keep up (latest frame wins).
            "target_fps": p.config.fps,
            "effective_fps": round(p.effective_fps, 3),
            "skipped_backpressure": p.stats.skipped,
            # From frame receipt to its rules evaluated, over the camera's recent frames.
            "latency_p50_s": None if p50 is None else round(p50, 4),
            "latency_p95_s": None if p95 is None else round(p95, 4),
            "reconnects": cam.health.reconnects,
            "last_error": cam.stats.last_error or None,
            "rules": [r.name for r, _ in p.rules],
            "window": p.window.describe() if p.window is not None else None,
        }
    return out


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

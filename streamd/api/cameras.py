"""GET /api/cameras: each camera's health and counters (the contract's fields and more).

With several instances sharing a database, every configured camera is listed with the instance
that holds its lease (`instance`, null while nobody does); counters are only known where the
camera runs, so a camera analysed elsewhere has them null and `local: false`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from streamd.api.errors import responses
from streamd.api.state import Authorized, State
from streamd.pipeline import CameraPipeline

router = APIRouter(tags=["cameras"], dependencies=Authorized)

_COUNTERS = (
    "online",
    "width",
    "height",
    "decoded_frames",
    "demuxed_frames",
    "sampled_frames",
    "keyframe_interval_s",
    "decode_mode",
    "dropped_frames",
    "analysed_frames",
    "gated_frames",
    "effective_fps",
    "skipped_backpressure",
    "latency_p50_s",
    "latency_p95_s",
    "reconnects",
    "last_error",
)


def _local(p: CameraPipeline) -> dict[str, Any]:
    cam = p.camera
    p50, p95 = p.latency.quantiles()
    return {
        "online": cam.health.online,
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
        # Back-pressure: what analysis delivered over the last seconds, and the frames it
        # skipped to keep up (latest frame wins).
        "effective_fps": round(p.effective_fps, 3),
        "skipped_backpressure": p.stats.skipped,
        # From frame receipt to its rules evaluated, over the camera's recent frames.
        "latency_p50_s": None if p50 is None else round(p50, 4),
        "latency_p95_s": None if p95 is None else round(p95, 4),
        "reconnects": cam.health.reconnects,
        "last_error": cam.stats.last_error or None,
        "window": p.window.describe() if p.window is not None else None,
    }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@router.get(
    "/api/cameras",
    summary="Camera health and counters",
    responses=responses(503, e503="The lease table (instances sharing a database) is unreachable"),
)
async def cameras(st: State) -> dict[str, Any]:
    me = st.config.instance.name
    # The lease table is read like the event log: a database outage answers 503 (handlers).
    holders = await st.holders() if st.holders is not None else None
    out: dict[str, Any] = {}
    for name, p in st.pipelines.items():
        local = st.running is None or name in st.running
        holder = me if local else (holders or {}).get(name)
        out[name] = {
            "source": p.camera.spec.display,
            "fps": p.config.fps,
            "target_fps": p.config.fps,
            "rules": [r.name for r, _ in p.rules],
            "instance": holder,
            "local": local,
            **(_local(p) if local else {**dict.fromkeys(_COUNTERS), "window": None}),
        }
    return out

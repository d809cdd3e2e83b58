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
    "sampled_frames",
    "dropped_frames",
    "analysed_frames",
    "gated_frames",
    "reconnects",
    "last_error",
)


def _local(p: CameraPipeline) -> dict[str, Any]:
    cam = p.camera
    return {
        "online": cam.health.online,
        "width": cam.stats.width,
        "height": cam.stats.height,
        "decoded_frames": cam.stats.decoded,
        "sampled_frames": cam.stats.sampled,
        "dropped_frames": cam.dropped,
        "analysed_frames": p.perception.stats.analysed,
        "gated_frames": p.perception.stats.gated,
        "reconnects": cam.health.reconnects,
        "last_error": cam.stats.last_error or None,
        "window": p.window.describe() if p.window is not None else None,
    }


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
            "rules": [r.name for r, _ in p.rules],
            "instance": holder,
            "local": local,
            **(_local(p) if local else {**dict.fromkeys(_COUNTERS), "window": None}),
        }
    return out

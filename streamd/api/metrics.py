"""GET /metrics: Prometheus text exposition of the cameras' and components' counters."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from streamd.api.errors import responses
from streamd.api.state import Authorized, State

router = APIRouter(tags=["metrics"], dependencies=Authorized)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {}}}, **responses()},
)
async def metrics(st: State) -> str:
    lines: list[str] = []
    for name, p in st.pipelines.items():
        cam, lbl = p.camera, f'camera="{name}"'
        lines += [
            f"streamd_camera_online{{{lbl}}} {int(cam.health.online)}",
            f"streamd_frames_decoded_total{{{lbl}}} {cam.stats.decoded}",
            f"streamd_frames_sampled_total{{{lbl}}} {cam.stats.sampled}",
            f"streamd_frames_dropped_total{{{lbl}}} {cam.dropped}",
            f"streamd_frames_analysed_total{{{lbl}}} {p.perception.stats.analysed}",
            f"streamd_frames_gated_total{{{lbl}}} {p.perception.stats.gated}",
            f"streamd_camera_reconnects_total{{{lbl}}} {cam.health.reconnects}",
            f"streamd_events_total{{{lbl}}} {p.stats.events}",
        ]
    for extra in st.metrics:
        lines += extra()
    return "\n".join(lines) + "\n"

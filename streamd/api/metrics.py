"""GET /metrics: Prometheus text exposition (prometheus_client, see streamd.metrics)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from streamd.api.errors import responses
from streamd.api.state import Authorized, State
from streamd.metrics import CONTENT_TYPE_LATEST, Metrics

router = APIRouter(tags=["metrics"], dependencies=Authorized)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    description="Cameras, events (from SQL), the event writer, MQTT, retention and windows.",
    responses={200: {"content": {"text/plain": {}}}, **responses()},
)
async def metrics(st: State) -> Response:
    source = st.metrics or Metrics(st.store, st.pipelines)
    return Response(await source.render(), media_type=CONTENT_TYPE_LATEST)

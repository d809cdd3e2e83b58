"""A tiny WHEP server for tests: each POSTed offer gets an aiortc peer playing a clip.

    python whep_server.py HOST PORT CLIP TOKEN

POST /whep (application/sdp, bearer TOKEN) → 201 + answer + Location: /whep/<id>;
DELETE /whep/<id> closes that peer; GET /stats → {"offers": n, "deletes": n, "active": n}.
It is a separate process so that a test can SIGKILL it and start it again.
"""

from __future__ import annotations

import secrets
import sys

import uvicorn
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response


def make_app(clip: str, token: str) -> FastAPI:
    app = FastAPI()
    peers: dict[str, RTCPeerConnection] = {}
    stats = {"offers": 0, "deletes": 0}

    @app.post("/whep")
    async def offer(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            return PlainTextResponse("missing or wrong bearer token", status_code=401)
        if request.headers.get("content-type", "").split(";")[0] != "application/sdp":
            return PlainTextResponse("expected application/sdp", status_code=415)
        stats["offers"] += 1
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # loop=True as a camera never ends; the tests stay well inside the clip's length
        # (aiortc stops pacing a looped file after its first pass).
        player = MediaPlayer(clip, loop=True)
        await pc.setRemoteDescription(
            RTCSessionDescription((await request.body()).decode(), "offer")
        )
        assert player.video is not None
        pc.addTrack(player.video)
        await pc.setLocalDescription(await pc.createAnswer())
        sid = secrets.token_hex(8)
        peers[sid] = pc
        return Response(
            pc.localDescription.sdp,
            status_code=201,
            media_type="application/sdp",
            headers={"Location": f"/whep/{sid}"},
        )

    @app.delete("/whep/{sid}")
    async def delete(sid: str) -> Response:
        pc = peers.pop(sid, None)
        if pc is None:
            return PlainTextResponse("no such session", status_code=404)
        stats["deletes"] += 1
        await pc.close()
        return Response(status_code=200)

    @app.get("/stats")
    async def get_stats() -> JSONResponse:
        return JSONResponse({**stats, "active": len(peers)})

    return app


def main() -> None:
    host, port, clip, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    uvicorn.run(make_app(clip, token), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()

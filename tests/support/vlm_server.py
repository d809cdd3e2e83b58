"""A STAND-IN for an OpenAI-compatible VLM server (vLLM, Ollama, llama.cpp serving Qwen-VL):
none can run on this machine, so a small Starlette app served by uvicorn on 127.0.0.1 speaks the
chat-completions schema, records every request and answers what each test scripts (a verdict,
a fenced verdict, a delay past the timeout, an HTTP 500)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def verdict_json(match: bool, confidence: float = 0.9, explanation: str = "x") -> str:
    return json.dumps({"match": match, "confidence": confidence, "explanation": explanation})


@dataclass
class Script:
    """What the stand-in server answers, and what it saw."""

    reply: str = ""
    delay_s: float = 0.0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def make_app(script: Script) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        script.requests.append({"body": body, "headers": dict(request.headers)})
        script.concurrent += 1
        script.max_concurrent = max(script.max_concurrent, script.concurrent)
        try:
            # Server-side latency of a busy VLM (not synchronisation); a client that gave up
            # ends the wait, as a real server's cancelled request would.
            until = time.monotonic() + script.delay_s
            while time.monotonic() < until:
                if await request.is_disconnected():
                    return Response(status_code=499)
                await asyncio.sleep(0.02)
            if script.status != 200:
                return PlainTextResponse("model crashed", status_code=script.status)
            return JSONResponse(
                {
                    "id": f"chatcmpl-{len(script.requests)}",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": script.reply},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        finally:
            script.concurrent -= 1

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@dataclass
class VlmServer:
    url: str
    script: Script


@contextmanager
def serve_vlm() -> Iterator[VlmServer]:
    """Run the stand-in on a free loopback port until the block ends."""
    script = Script()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        make_app(script),
        log_level="warning",
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the stand-in VLM server died while starting"
        assert time.monotonic() < deadline, "the stand-in VLM server did not start in 10 s"
        time.sleep(0.02)
    yield VlmServer(f"http://127.0.0.1:{port}/v1", script)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()

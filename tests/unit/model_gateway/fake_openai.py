"""A small OpenAI-compatible server for tests: chat completions (plain and SSE), embeddings, errors.

The requested `model` selects behaviour: `rate-limited` (429), `broken` (503), `bad` (400), `slow` (sleeps),
anything else answers `echo: <last user message>`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

API_KEY = "test-key"
_ERRORS = {"rate-limited": 429, "broken": 503, "bad": 400}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "test"}}, status_code=status)


async def _guard(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        return None, _error(401, "bad key")
    body: dict[str, Any] = json.loads(await request.body())
    model = body.get("model", "")
    if model in _ERRORS:
        return None, _error(_ERRORS[model], f"{model} on purpose")
    if model == "slow":
        await asyncio.sleep(2)
    return body, None


async def chat(request: Request) -> Response:
    body, failure = await _guard(request)
    if failure is not None or body is None:
        return failure or _error(500, "unreachable")
    text = "echo: " + body["messages"][-1]["content"]
    words = text.split(" ")
    usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
    finish = "length" if body.get("max_tokens") == 1 else "stop"
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": "cmpl-1",
                "model": body["model"] + "-2024",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                ],
                "usage": usage,
            }
        )

    async def events() -> AsyncIterator[str]:
        yield ": keep-alive comment\n\n"
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
        yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': finish}]})}\n\n"
        if body.get("stream_options", {}).get("include_usage"):
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def embeddings(request: Request) -> Response:
    body, failure = await _guard(request)
    if failure is not None or body is None:
        return failure or _error(500, "unreachable")
    texts: list[str] = body["input"]
    data = [{"index": i, "embedding": [float(len(t)), float(i)]} for i, t in enumerate(texts)]
    return JSONResponse({"data": list(reversed(data)), "usage": {"prompt_tokens": len(texts) * 2}})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve() -> Iterator[str]:
    """Runs the fake server in a background thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("fake OpenAI server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

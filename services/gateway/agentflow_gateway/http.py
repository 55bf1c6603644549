"""The REST/JSON edge as a raw ASGI application (served by uvicorn).

Per request: authenticate (401) → route (404/405) → authorize (403) → transcode (400) → call the owning
service with the caller's identity and deadline → JSON, or NDJSON for server streams. It is a plain ASGI
callable rather than a Starlette app: the route table already does the routing, and skipping the
framework's request/response objects keeps the per-request cost down. `/mcp` goes to the MCP endpoint
(`mcp_edge`) when one is given.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc
import orjson
from agentflow_runtime.errors import AgentFlowError, InvalidArgument, NotFound
from google.protobuf import message
from google.rpc import code_pb2, status_pb2

from agentflow_gateway.auth import Authenticator
from agentflow_gateway.backends import Backends
from agentflow_gateway.errors import http_status, status_from_exception, status_json, status_payload
from agentflow_gateway.mcp_edge import MCP_PATH
from agentflow_gateway.rbac import authorize
from agentflow_gateway.routes import Route, RouteTable
from agentflow_gateway.transcode import build_request, response_json, response_payload

__all__ = ["GatewayApp"]

Scope = MutableMapping[str, Any]
AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]

DEFAULT_TIMEOUT = 30.0
MAX_BODY_BYTES = 16 * 1024 * 1024
_JSON = (b"content-type", b"application/json")
_NDJSON = (b"content-type", b"application/x-ndjson")
_FORWARDED_HEADERS = frozenset({b"traceparent", b"tracestate"})
_HEALTH_BODY = b'{"status":"SERVING"}'


class _Unimplemented(AgentFlowError):
    """405: the path exists, not with this HTTP method."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "METHOD_NOT_ALLOWED"


class _ClientGoneError(Exception):
    """The client disconnected while the request was being read."""


class GatewayApp:
    """See the module docstring."""

    def __init__(
        self,
        routes: RouteTable,
        backends: Backends,
        authenticator: Authenticator,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        mcp: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
    ) -> None:
        self._routes = routes
        self._backends = backends
        self._auth = authenticator
        self._default_timeout = default_timeout
        self._mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw_path: bytes | None = scope.get("raw_path")
        # Some ASGI clients (httpx's transport) leave the query string in raw_path; uvicorn does not.
        path = raw_path.partition(b"?")[0].decode("latin-1") if raw_path else scope["path"]
        if path == "/healthz":
            await _send_body(send, 200, _HEALTH_BODY, (_JSON,))
            return
        try:
            if path == MCP_PATH and self._mcp is not None:
                await self._mcp(scope, receive, send)  # the MCP endpoint (mcp_edge): authenticates itself
                return
            await self._handle(scope, path, receive, send)
        except _ClientGoneError:
            return
        except Exception as exc:
            await _send_error(send, status_from_exception(exc))

    async def _handle(self, scope: Scope, path: str, receive: Receive, send: Send) -> None:
        authorization: str | None = None
        timeout_header: str | None = None
        forwarded: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-request-timeout":
                timeout_header = value.decode("latin-1")
            elif name in _FORWARDED_HEADERS:
                forwarded.append((name.decode(), value.decode("latin-1")))
        principal = self._auth.authenticate(authorization)
        http_method: str = scope["method"]
        match = self._routes.match(http_method, path)
        if match is None:
            await self._no_route(send, path)
            return
        route = match.route
        authorize(principal, route.method)
        body = await _read_body(receive)
        query = scope.get("query_string", b"").decode("latin-1")
        request = build_request(route, match.bindings, query, body)
        metadata = (*principal.metadata(), *forwarded)
        if route.method.server_streaming:
            deadline = _timeout(timeout_header, None)
            await self._stream(
                route, request, deadline=deadline, metadata=metadata, receive=receive, send=send
            )
        else:
            deadline = _timeout(timeout_header, self._default_timeout)
            await self._unary(
                route, request, deadline=deadline, metadata=metadata, receive=receive, send=send
            )

    async def _no_route(self, send: Send, path: str) -> None:
        allowed = self._routes.allowed_methods(path)
        if allowed:
            status = _Unimplemented(
                "method not allowed", reason="METHOD_NOT_ALLOWED", metadata={"allow": ", ".join(allowed)}
            ).to_status()
            allow = (b"allow", ", ".join(allowed).encode())
            await _send_body(send, 405, status_json(status), (_JSON, allow))
        else:
            status = NotFound(
                f"no route for {path}", reason="ROUTE_NOT_FOUND", metadata={"path": path}
            ).to_status()
            await _send_body(send, 404, status_json(status), (_JSON,))

    async def _unary(
        self,
        route: Route,
        request: message.Message,
        *,
        deadline: float | None,
        metadata: tuple[tuple[str, str], ...],
        receive: Receive,
        send: Send,
    ) -> None:
        call = self._backends.unary(route.method)(request, timeout=deadline, metadata=metadata)
        watcher = _watch_disconnect(receive, call)
        try:
            response = await call
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                return  # the client went away; its call was cancelled
            raise
        finally:
            watcher.cancel()
        await _send_body(send, 200, response_json(route, response), (_JSON,))

    async def _stream(
        self,
        route: Route,
        request: message.Message,
        *,
        deadline: float | None,
        metadata: tuple[tuple[str, str], ...],
        receive: Receive,
        send: Send,
    ) -> None:
        call = self._backends.stream(route.method)(request, timeout=deadline, metadata=metadata)
        watcher = _watch_disconnect(receive, call)
        started = False
        try:
            async for item in call:
                line = orjson.dumps({"result": response_payload(route, item)}) + b"\n"
                if not started:
                    await send({"type": "http.response.start", "status": 200, "headers": [_NDJSON]})
                    started = True
                await send({"type": "http.response.body", "body": line, "more_body": True})
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                return
            raise
        except Exception as exc:
            if watcher.done() and not watcher.cancelled():
                return
            status = status_from_exception(exc)
            if not started:
                await send(
                    {"type": "http.response.start", "status": http_status(status.code), "headers": [_NDJSON]}
                )
                started = True
            line = orjson.dumps({"error": status_payload(status)}) + b"\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})
        finally:
            watcher.cancel()
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": [_NDJSON]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _watch_disconnect(receive: Receive, call: grpc.aio.Call) -> asyncio.Task[None]:
    """A task that cancels the backend call when the client disconnects."""

    async def watch() -> None:
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                call.cancel()
                return

    return asyncio.ensure_future(watch())


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk: bytes = event.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise InvalidArgument(
                    f"request body larger than {MAX_BODY_BYTES} bytes", reason="BODY_TOO_LARGE"
                )
            chunks.append(chunk)
        if not event.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _timeout(header: str | None, default: float | None) -> float | None:
    """The call deadline: `X-Request-Timeout` seconds when given, else the default (None = unbounded)."""
    if header is None:
        return default
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgument(
            "X-Request-Timeout must be a positive number of seconds",
            violations=[("X-Request-Timeout", "expected a positive number")],
        )
    return seconds


async def _send_body(send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, status: status_pb2.Status) -> None:
    headers: tuple[tuple[bytes, bytes], ...] = (_JSON,)
    if status.code == code_pb2.UNAUTHENTICATED:
        headers = (_JSON, (b"www-authenticate", b'Bearer realm="agentflow"'))
    await _send_body(send, http_status(status.code), status_json(status), headers)

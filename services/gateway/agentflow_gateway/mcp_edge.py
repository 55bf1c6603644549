"""`/mcp`: the gateway's MCP endpoint (streamable HTTP), served by the SDK's `StreamableHTTPSessionManager`.

Every HTTP request (POST of JSON-RPC, GET of the server's SSE stream, DELETE of the session) is authenticated
first with the REST edge's `Authenticator`: no valid bearer token, 401 (raised to the REST edge, which answers
it like any other). The principal then rides in the ASGI scope to the handlers (`mcp_server`), and is also
the session's owner: a session id presented with another user's token (another subject or tenant) answers
404, as if it did not exist. Sessions live in this gateway process (idle ones close after
`SESSION_IDLE_SECONDS`); a client that reaches another replica gets 404 and initializes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from agentflow_gateway.auth import Authenticator, Principal
from agentflow_gateway.mcp_bridge import McpBridge
from agentflow_gateway.mcp_runs import RunTools
from agentflow_gateway.mcp_server import FORWARDED_KEY, PRINCIPAL_KEY, build_server

__all__ = ["MCP_PATH", "McpEdge"]

MCP_PATH = "/mcp"
SESSION_IDLE_SECONDS = 30 * 60
ISSUER = "agentflow-gateway"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_FORWARDED_HEADERS = frozenset({b"traceparent", b"tracestate"})


class McpEdge:
    """The `/mcp` ASGI endpoint; `start()` before serving, `stop()` after (see the module docstring)."""

    def __init__(self, authenticator: Authenticator, bridge: McpBridge, runs: RunTools) -> None:
        self._auth = authenticator
        self.server = build_server(bridge, runs)
        self._manager = StreamableHTTPSessionManager(self.server, session_idle_timeout=SESSION_IDLE_SECONDS)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Run the session manager (its task group holds every session) until `stop()`."""
        ready = asyncio.Event()

        async def run() -> None:
            async with self._manager.run():
                ready.set()
                await self._stopping.wait()

        self._task = asyncio.create_task(run(), name="gateway-mcp-sessions")
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # the manager failed to start: raise why

    async def stop(self) -> None:
        """Close every session (their in-flight requests are cancelled)."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization: str | None = None
        forwarded: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name in _FORWARDED_HEADERS:
                forwarded.append((name.decode(), value.decode("latin-1")))
        principal = self._auth.authenticate(authorization)  # Unauthenticated -> 401 at the REST edge
        scope[PRINCIPAL_KEY] = principal
        scope[FORWARDED_KEY] = tuple(forwarded)
        scope["user"] = _owner(principal)
        await self._manager.handle_request(scope, receive, send)


def _owner(principal: Principal) -> AuthenticatedUser:
    """The identity the SDK binds a session to: the same subject in the same tenant."""
    token = AccessToken(
        token="",
        client_id=principal.tenant,
        subject=principal.subject,
        scopes=[principal.role.value],
        claims={"iss": ISSUER},
    )
    return AuthenticatedUser(token)

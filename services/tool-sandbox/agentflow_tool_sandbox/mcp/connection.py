"""One live MCP session with a server, held open by a task of its own.

The SDK's transports and sessions live in anyio task groups that must be entered and left by the same task,
so a connection task owns them and waits until it is closed; callers use the session from their own tasks.
A call races the connection's death: when the transport fails (server killed, connection refused) the
call ends with `ConnectionLost` instead of waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import anyio
import httpx
from mcp import ClientSession, types
from mcp.shared.exceptions import McpError
from mcp.shared.session import RequestResponder

from agentflow_tool_sandbox.mcp import stdio_launch
from agentflow_tool_sandbox.mcp.model import ServerSpec
from agentflow_tool_sandbox.mcp.policy import ServerPolicy
from agentflow_tool_sandbox.mcp.transports import open_transport

log = logging.getLogger("agentflow.tool_sandbox.mcp")

T = TypeVar("T")
CLIENT_INFO = types.Implementation(name="agentflow-tool-sandbox", version="1")
CONNECTION_CLOSED = -32000


class ConnectionLost(Exception):
    """The session ended before the call got its answer. `delivered` is False when the request cannot have
    reached the server (the connection was refused), so repeating it is safe."""

    def __init__(self, message: str, *, delivered: bool) -> None:
        super().__init__(message)
        self.delivered = delivered


class ServerConnection:
    """An initialized ClientSession with one server; `on_tools_changed` runs on `tools/list_changed`."""

    def __init__(
        self,
        spec: ServerSpec,
        launch: stdio_launch.LaunchConfig,
        on_tools_changed: Callable[[], None],
        policy: ServerPolicy | None = None,
    ) -> None:
        self.spec = spec
        self._launch = launch
        self._policy = policy or ServerPolicy()
        self._on_tools_changed = on_tools_changed
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._dead = asyncio.Event()
        self._closing = asyncio.Event()
        self._cause: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """Connected and not (yet) lost."""
        return self._ready.is_set() and not self._dead.is_set()

    async def open(self, timeout: float) -> None:
        """Connect and initialize within `timeout`; raises ConnectionLost (not delivered) when it cannot."""
        self._task = asyncio.get_running_loop().create_task(self._main(), name=f"mcp-{self.spec.server_id}")
        ready = asyncio.ensure_future(self._ready.wait())
        dead = asyncio.ensure_future(self._dead.wait())
        try:
            await asyncio.wait({ready, dead}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            dead.cancel()
        if not self.alive:
            cause = self.describe_cause() if self._dead.is_set() else f"no answer within {timeout:g}s"
            await self.close()
            raise ConnectionLost(f"cannot connect: {cause}", delivered=False)

    async def close(self) -> None:
        """End the session (and stop a stdio server's process)."""
        self._closing.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task

    async def request(self, call: Callable[[ClientSession], Awaitable[T]], timeout: float) -> T:
        """Run `call` on the session within `timeout` (TimeoutError); ConnectionLost when the session dies."""
        session = self._session
        if session is None or not self.alive:
            raise ConnectionLost("not connected", delivered=False)
        work = asyncio.ensure_future(call(session))
        dead = asyncio.ensure_future(self._dead.wait())
        try:
            done, _ = await asyncio.wait({work, dead}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dead.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
        if work in done:
            try:
                return work.result()
            except McpError as exc:
                if exc.error.code == CONNECTION_CLOSED:
                    raise ConnectionLost(f"connection closed: {exc.error.message}", delivered=True) from exc
                raise
            except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                raise ConnectionLost("connection closed", delivered=False) from exc
        if dead in done:
            raise ConnectionLost(f"connection lost: {self.describe_cause()}", delivered=self._delivered())
        raise TimeoutError(f"no answer within {timeout:g}s")

    def describe_cause(self) -> str:
        """What ended the connection, in a few words."""
        cause = _root(self._cause)
        if cause is None:
            return "the server closed the connection"
        if isinstance(cause, httpx.ConnectError):
            return f"connection refused ({self._url()})"
        if isinstance(cause, httpx.HTTPStatusError):
            return f"HTTP {cause.response.status_code} from {self._url()}"
        return f"{type(cause).__name__}: {cause}".rstrip(": ")

    def _url(self) -> str:
        return str(getattr(self.spec.transport, "url", "stdio"))

    def _delivered(self) -> bool:
        return not isinstance(_root(self._cause), httpx.ConnectError)

    async def _main(self) -> None:
        try:
            async with (
                open_transport(self.spec, self._launch, self._policy) as streams,
                ClientSession(
                    streams.read,
                    streams.write,
                    message_handler=self._message,
                    client_info=CLIENT_INFO,
                    read_timeout_seconds=timedelta(seconds=max(self.spec.timeout_seconds, 30.0)),
                ) as session,
            ):
                await session.initialize()
                self._session = session
                self._ready.set()
                closing = asyncio.ensure_future(self._closing.wait())
                ended = asyncio.ensure_future(streams.ended.wait())
                try:
                    await asyncio.wait({closing, ended}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closing.cancel()
                    ended.cancel()
        except BaseException as exc:  # the transport's task group failed, or we were cancelled
            self._cause = exc
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                log.info(
                    "mcp connection ended",
                    extra={"fields": {"server": self.spec.server_id, "cause": self.describe_cause()}},
                )
        finally:
            self._session = None
            self._dead.set()

    async def _message(
        self,
        message: RequestResponder[types.ServerRequest, types.ClientResult]
        | types.ServerNotification
        | Exception,
    ) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            self._on_tools_changed()


def _root(exc: BaseException | None) -> BaseException | None:
    """The first leaf of an exception group (the error that failed a task group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


__all__ = ["ConnectionLost", "ServerConnection"]

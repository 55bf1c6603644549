"""A fake RunService on a real (insecure) grpc.aio server, and the gateway pieces wired to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import httpx
import jwt
import pytest
from agentflow.runs.v1 import runs_pb2, runs_pb2_grpc
from agentflow_gateway.auth import Authenticator, HS256Verifier
from agentflow_gateway.backends import Backends
from agentflow_gateway.http import GatewayApp
from agentflow_gateway.routes import RouteTable, build_methods, build_routes
from agentflow_runtime.errors import FailedPrecondition, NotFound
from google.protobuf import struct_pb2
from grpc_status import rpc_status

SECRET = "unit-test-secret-" + "0123456789abcdef" * 4


def make_token(
    role: str | None = "developer",
    *,
    sub: str | None = "alice",
    tenant: str | None = "acme",
    exp_in: float = 300.0,
    secret: str = SECRET,
    **extra: Any,
) -> str:
    claims: dict[str, Any] = {"exp": int(time.time() + exp_in), **extra}
    if sub is not None:
        claims["sub"] = sub
    if tenant is not None:
        claims["tenant"] = tenant
    if role is not None:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(role: str | None = "developer", **kwargs: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(role, **kwargs)}"}


class FakeRunService(runs_pb2_grpc.RunServiceServicer):
    """Answers from memory and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []
        self.deadlines: list[float | None] = []
        self.watch_cancelled = asyncio.Event()

    def _record(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        self.deadlines.append(context.time_remaining())

    async def StartRun(self, request: Any, context: Any) -> runs_pb2.Run:
        self._record(request, context)
        return runs_pb2.Run(
            name="runs/r1",
            workflow=request.workflow,
            input=request.input,
            labels=request.labels,
            state=runs_pb2.RUN_STATE_PENDING,
        )

    async def GetRun(self, request: Any, context: Any) -> runs_pb2.Run:
        self._record(request, context)
        if request.name == "runs/slow":
            await asyncio.sleep(5)
        if request.name != "runs/r1":
            status = NotFound(
                f"{request.name} not found", reason="RUN_NOT_FOUND", metadata={"run": request.name}
            ).to_status()
            await context.abort_with_status(rpc_status.to_status(status))
        return runs_pb2.Run(name="runs/r1", workflow="workflows/w", state=runs_pb2.RUN_STATE_RUNNING)

    async def ListRuns(self, request: Any, context: Any) -> runs_pb2.ListRunsResponse:
        self._record(request, context)
        return runs_pb2.ListRunsResponse(runs=[runs_pb2.Run(name="runs/r1")], next_page_token="t2")

    async def CancelRun(self, request: Any, context: Any) -> runs_pb2.Run:
        self._record(request, context)
        return runs_pb2.Run(name=request.name, state=runs_pb2.RUN_STATE_CANCELLED)

    async def ReplayRun(self, request: Any, context: Any) -> runs_pb2.ReplayRunResponse:
        self._record(request, context)
        return runs_pb2.ReplayRunResponse(matches=True)

    async def WatchRun(self, request: Any, context: Any) -> AsyncIterator[runs_pb2.RunEvent]:
        self._record(request, context)
        for seq in range(request.after_seq + 1, 4):
            yield runs_pb2.RunEvent(
                seq=seq,
                run=request.name,
                type=runs_pb2.RUN_EVENT_TYPE_STEP_STARTED,
                data=struct_pb2.Struct(fields={"n": struct_pb2.Value(number_value=seq)}),
            )
        if request.name == "runs/fail":
            status = FailedPrecondition("step exploded", reason="STEP_FAILED").to_status()
            await context.abort_with_status(rpc_status.to_status(status))
        if request.name == "runs/endless":
            try:
                while True:
                    await asyncio.sleep(0.05)
                    yield runs_pb2.RunEvent(seq=99, run=request.name)
            except asyncio.CancelledError:
                self.watch_cancelled.set()
                raise


class OneChannel:
    """A channel source that sends every service's calls to one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.asked: list[str] = []

    def get(self, service: str) -> grpc.aio.Channel:
        self.asked.append(service)
        return self.channel


@pytest.fixture
async def fake_runs() -> AsyncIterator[tuple[FakeRunService, str]]:
    server = grpc.aio.server()
    servicer = FakeRunService()
    runs_pb2_grpc.add_RunServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def channels(fake_runs: tuple[FakeRunService, str]) -> AsyncIterator[OneChannel]:
    channel = grpc.aio.insecure_channel(fake_runs[1])
    yield OneChannel(channel)
    await channel.close(None)


@pytest.fixture(scope="session")
def route_table() -> RouteTable:
    return build_routes(build_methods())


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(HS256Verifier(SECRET))


@pytest.fixture
async def client(
    channels: OneChannel, route_table: RouteTable, authenticator: Authenticator
) -> AsyncIterator[httpx.AsyncClient]:
    app = GatewayApp(route_table, Backends(cast(Any, channels)), authenticator)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
        yield http

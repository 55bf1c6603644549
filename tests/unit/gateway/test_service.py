"""The gateway service as the runtime starts it: uvicorn on a real socket and the gRPC pass-through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import httpx
import orjson
import pytest
from agentflow.runs.v1 import runs_pb2, runs_pb2_grpc
from agentflow_gateway.app import GatewayService
from agentflow_runtime.errors import from_rpc_error
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings

from tests.unit.gateway.conftest import SECRET, FakeRunService, OneChannel, bearer, make_token


@pytest.fixture
async def gateway(channels: OneChannel) -> AsyncIterator[tuple[GatewayService, str]]:
    settings = Settings(host="127.0.0.1", http_port=0, jwt_secret=SECRET, drain_seconds=1)
    service = GatewayService(settings, channels=channels)
    server = grpc.aio.server()
    runtime = Runtime(settings, cast(Any, channels), cast(Any, None))
    await service.start(server, runtime)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, f"127.0.0.1:{port}"
    await server.stop(None)
    await service.stop()


async def test_rest_over_a_real_socket(gateway: tuple[GatewayService, str]) -> None:
    service, _ = gateway
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.http_port}") as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        response = await http.get("/v1/runs/r1", headers=bearer("viewer"))
    assert response.status_code == 200
    assert response.json()["state"] == "RUN_STATE_RUNNING"


async def test_stream_lines_arrive_as_sent_and_disconnect_cancels(
    gateway: tuple[GatewayService, str], fake_runs: tuple[FakeRunService, str]
) -> None:
    service, _ = gateway
    servicer, _ = fake_runs
    url = f"http://127.0.0.1:{service.http_port}/v1/runs/endless:watch"
    async with (
        httpx.AsyncClient() as http,
        http.stream("GET", url, headers=bearer("viewer")) as response,
    ):
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = response.aiter_lines()
        first = orjson.loads(await anext(lines))
        assert first["result"]["seq"] == "1"
        # The stream never ends by itself: these lines can only have been flushed one by one.
        for _ in range(4):
            await anext(lines)
    await asyncio.wait_for(servicer.watch_cancelled.wait(), timeout=5)


async def test_grpc_passthrough(
    gateway: tuple[GatewayService, str], fake_runs: tuple[FakeRunService, str]
) -> None:
    _, address = gateway
    servicer, _ = fake_runs
    token = make_token("viewer", tenant="t7")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = runs_pb2_grpc.RunServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"), ("x-af-tenant", "forged"), ("x-trace", "1"))
        run = await stub.GetRun(runs_pb2.GetRunRequest(name="runs/r1"), metadata=metadata, timeout=3)
        assert run.state == runs_pb2.RUN_STATE_RUNNING
        seen = servicer.metadata[-1]
        assert seen["x-af-tenant"] == "t7"
        assert seen["x-af-role"] == "viewer"
        assert seen["x-trace"] == "1"
        deadline = servicer.deadlines[-1]
        # The caller's 3 s deadline arrives (not the 30 s default); grpc-timeout encoding may round it up.
        assert deadline is not None and 2 < deadline <= 3.1

        events = [e async for e in stub.WatchRun(runs_pb2.WatchRunRequest(name="runs/r1"), metadata=metadata)]
        assert [e.seq for e in events] == [1, 2, 3]

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetRun(runs_pb2.GetRunRequest(name="runs/x"), metadata=metadata)
        error = from_rpc_error(missing.value)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.reason == "RUN_NOT_FOUND"

        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.StartRun(runs_pb2.StartRunRequest(workflow="workflows/w"), metadata=metadata)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert from_rpc_error(denied.value).reason == "ROLE_NOT_ALLOWED"

        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetRun(runs_pb2.GetRunRequest(name="runs/r1"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert from_rpc_error(anonymous.value).reason == "TOKEN_MISSING"


async def test_unknown_grpc_method_is_unimplemented(gateway: tuple[GatewayService, str]) -> None:
    _, address = gateway
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/agentflow.audit.v1.AuditIngestService/AppendAuditEvents",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"", metadata=(("authorization", f"Bearer {make_token('admin')}"),))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

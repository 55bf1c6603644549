"""Health checks over mTLS with the operator's client certificate."""

from __future__ import annotations

import asyncio

import grpc
from agentflow_runtime.certs import CLIENT_IDENTITY
from agentflow_runtime.clients import Channels
from agentflow_runtime.settings import Settings
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def check(settings: Settings, services: list[str], timeout: float = 2.0) -> dict[str, str]:
    """Overall health status name per service ("UNREACHABLE" when it does not answer)."""
    channels = Channels(settings, CLIENT_IDENTITY)
    try:
        results = await asyncio.gather(*(_one(channels, s, timeout) for s in services))
    finally:
        await channels.close()
    return dict(zip(services, results, strict=True))


async def _one(channels: Channels, service: str, timeout: float) -> str:
    stub = health_pb2_grpc.HealthStub(channels.get(service))
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        return "UNREACHABLE" if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def wait_serving(settings: Settings, services: list[str], deadline: float) -> dict[str, str]:
    """Poll until every service reports SERVING or `deadline` seconds pass; the last statuses."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        statuses = await check(settings, services, timeout=1.0)
        if all(s == "SERVING" for s in statuses.values()) or loop.time() > end:
            return statuses
        await asyncio.sleep(0.2)

"""The mesh as an operator sees it: health, metrics, reflection, mTLS, per-RPC caller allow-lists."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from agentflow.audit.v1 import audit_pb2, audit_pb2_grpc
from agentflow.runs.v1 import runs_pb2, runs_pb2_grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_runtime.clients import Channels
from agentflow_runtime.descriptors import SERVICE_OWNERS
from agentflow_runtime.settings import SERVICES, Settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

GRPCURL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "grpcurl"


def grpcurl(settings: Settings, *args: str, identity: str = "client") -> subprocess.CompletedProcess[str]:
    certs = settings.certs
    cmd = [
        str(GRPCURL),
        "-cacert",
        str(certs / "ca.pem"),
        "-cert",
        str(certs / f"{identity}.pem"),
        "-key",
        str(certs / f"{identity}-key.pem"),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("service", SERVICES)
def test_health_reports_serving(settings: Settings, service: str) -> None:
    async def check() -> int:
        channels = Channels(settings, "client")
        try:
            stub = health_pb2_grpc.HealthStub(channels.get(service))
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            return int(reply.status)
        finally:
            await channels.close()

    assert asyncio.run(check()) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_endpoint_answers(settings: Settings, service: str) -> None:
    reply = httpx.get(f"http://{settings.host}:{settings.metrics_port(service)}/metrics", timeout=5)
    assert reply.status_code == 200
    assert "grpc_server_handled_total" in reply.text


@pytest.mark.parametrize("service", SERVICES)
def test_grpcurl_lists_services_by_reflection(settings: Settings, service: str) -> None:
    result = grpcurl(settings, settings.address(service), "list")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    expected = {name for name, owner in SERVICE_OWNERS.items() if owner == service}
    assert expected <= listed
    assert "grpc.health.v1.Health" in listed


def test_grpcurl_calls_run_service_directly(settings: Settings) -> None:
    result = grpcurl(
        settings,
        "-H",
        "x-af-tenant: grpcurl-tenant",
        "-d",
        '{"pageSize": 5}',
        settings.address("worker"),
        "agentflow.runs.v1.RunService/ListRuns",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("{")


def test_grpcurl_gets_rich_not_found(settings: Settings) -> None:
    result = grpcurl(
        settings,
        "-d",
        '{"name": "runs/does-not-exist"}',
        settings.address("worker"),
        "agentflow.runs.v1.RunService/GetRun",
    )
    assert result.returncode != 0
    assert "NotFound" in result.stderr
    assert "RUN_NOT_FOUND" in result.stderr


def test_client_without_certificate_is_refused(settings: Settings) -> None:
    async def call() -> grpc.StatusCode:
        ca = (settings.certs / "ca.pem").read_bytes()
        async with grpc.aio.secure_channel(
            settings.address("worker"), grpc.ssl_channel_credentials(root_certificates=ca)
        ) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            try:
                await stub.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert asyncio.run(call()) == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(settings: Settings) -> None:
    async def call() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(settings.address("worker")) as channel:
            stub = runs_pb2_grpc.RunServiceStub(channel)
            try:
                await stub.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert asyncio.run(call()) == grpc.StatusCode.UNAVAILABLE


def test_service_calling_a_forbidden_rpc_is_denied(settings: Settings) -> None:
    """memory may not execute tools: only the worker (and the edge) may."""

    async def call() -> grpc.aio.AioRpcError:
        channels = Channels(settings, "memory")
        try:
            stub = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
            request = tools_pb2.ExecuteToolRequest(name="tools/word-count")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.ExecuteTool(request, timeout=5):
                    pass
            return caught.value
        finally:
            await channels.close()

    error = asyncio.run(call())
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "memory" in (error.details() or "")


def test_operator_client_may_not_append_audit(settings: Settings) -> None:
    async def call() -> grpc.StatusCode:
        channels = Channels(settings, "client")
        try:
            stub = audit_pb2_grpc.AuditIngestServiceStub(channels.get("audit"))
            request = audit_pb2.AppendAuditEventsRequest(audit_events=[audit_pb2.AuditEvent(action="forged")])
            try:
                await stub.AppendAuditEvents(request, timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
        finally:
            await channels.close()

    assert asyncio.run(call()) == grpc.StatusCode.PERMISSION_DENIED

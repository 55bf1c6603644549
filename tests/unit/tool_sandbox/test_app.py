from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.clients import Channels
from agentflow_runtime.protojson import py_from_value, struct_from_dict
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import Settings, load_settings
from agentflow_tool_sandbox.app import build
from agentflow_tool_sandbox.catalog import CatalogError

REPO = Path(__file__).resolve().parents[3]


def runtime(settings: Settings) -> Runtime:
    return Runtime(settings, Channels(settings, "tool-sandbox"), AuditSink(None))


async def test_the_service_serves_the_catalog(tmp_path: Path) -> None:
    settings = load_settings(database_url=None, data_dir=tmp_path / "data", catalog_dir=REPO / "catalog")
    service = build(settings)
    server = grpc.aio.server()
    await service.start(server, runtime(settings))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tools_pb2_grpc.ToolServiceStub(channel)
            listed = await stub.ListTools(tools_pb2.ListToolsRequest(), timeout=30)
            assert {"tools/word-count", "tools/ticker"} <= {t.name for t in listed.tools}
            request = tools_pb2.ExecuteToolRequest(
                name="tools/word-count", arguments=struct_from_dict({"text": "one two three"})
            )
            responses = [r async for r in stub.ExecuteTool(request, timeout=30)]
            assert py_from_value(responses[-1].result.output) == {"words": 3, "chars": 13}
    finally:
        await server.stop(None)
        await service.stop()


async def test_an_invalid_catalog_stops_the_start(tmp_path: Path) -> None:
    tools_dir = tmp_path / "catalog" / "tools"
    tools_dir.mkdir(parents=True)
    (tools_dir / "broken.yaml").write_text("id: broken\n")
    settings = load_settings(database_url=None, data_dir=tmp_path / "data", catalog_dir=tmp_path / "catalog")
    service = build(settings)
    with pytest.raises(CatalogError):
        await service.start(grpc.aio.server(), runtime(settings))
    await service.stop()


async def test_the_process_backend_needs_the_flag_and_warns_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        database_url=None, data_dir=tmp_path / "data", catalog_dir=REPO / "catalog", sandbox_backend="process"
    )
    service = build(settings)
    server = grpc.aio.server()
    run = runtime(settings)
    await service.start(server, run)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert any("UNSAFE" in r.getMessage() for r in caplog.records)  # at start
        caplog.clear()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tools_pb2_grpc.ToolServiceStub(channel)
            request = tools_pb2.ExecuteToolRequest(
                name="tools/word-count", arguments=struct_from_dict({"text": "a"})
            )
            responses = [r async for r in stub.ExecuteTool(request, timeout=30)]
        assert py_from_value(responses[-1].result.output) == {"words": 1, "chars": 1}
        assert any("UNSAFE" in r.getMessage() for r in caplog.records)  # and on the call
        assert run.not_serving == set()
    finally:
        await server.stop(None)
        await service.stop()


async def test_without_bubblewrap_the_service_is_not_serving_tools(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=None,
        data_dir=tmp_path / "data",
        catalog_dir=REPO / "catalog",
        sandbox_bwrap="/nonexistent",
    )
    service = build(settings)
    run = runtime(settings)
    await service.start(grpc.aio.server(), run)
    try:
        assert run.not_serving == {"agentflow.tools.v1.ToolService"}
    finally:
        await service.stop()

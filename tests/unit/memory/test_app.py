from __future__ import annotations

from pathlib import Path

import grpc
from agentflow.memory.v1 import memory_pb2, memory_pb2_grpc
from agentflow_memory.app import build
from agentflow_runtime.audit import AuditSink
from agentflow_runtime.clients import Channels
from agentflow_runtime.server import Runtime
from agentflow_runtime.settings import load_settings


async def test_app_serves_memory(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, database_url=None, metrics_enabled=False)
    service = build(settings)
    assert service.service_names == ("agentflow.memory.v1.MemoryService",)
    server = grpc.aio.server()
    await service.start(server, Runtime(settings, Channels(settings, "memory"), AuditSink(None)))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            memory = memory_pb2.Memory(name="memories/m1", text="cats and kittens", subject="s")
            stored = await stub.PutMemory(memory_pb2.PutMemoryRequest(memory=memory))
            assert stored.name == "memories/m1"
            found = await stub.QueryMemories(memory_pb2.QueryMemoriesRequest(text="kittens"))
            assert [r.memory.name for r in found.results] == ["memories/m1"]
    finally:
        await server.stop(None)
        await service.stop()
    assert (tmp_path / "memory.db").exists()
    assert (tmp_path / "qdrant").is_dir()

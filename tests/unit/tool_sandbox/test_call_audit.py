"""Every ExecuteTool call is audited and counted: refused, stopped by a limit, failed or fine."""

from __future__ import annotations

from typing import Any

import pytest
from agentflow.tools.v1 import tools_pb2
from agentflow_runtime import context
from agentflow_runtime.errors import FailedPrecondition, InvalidArgument
from agentflow_runtime.protojson import struct_from_dict
from agentflow_tool_sandbox.bwrap import BwrapConfig, BwrapRunner
from agentflow_tool_sandbox.executions import Executions
from agentflow_tool_sandbox.registry import Registry
from agentflow_tool_sandbox.servicer import ToolServicer
from agentflow_tool_sandbox.spec import Limits, ProcessSpec, ToolSpec
from agentflow_tool_sandbox.store import ExecutionStore, ToolStore
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from .test_servicer import FakeAudit

CTX: Any = None
CALLER = context.CallContext(tenant="acme", principal="ada", role="developer", caller="worker")


def tool(tool_id: str, source: str, **limits: Any) -> ToolSpec:
    return ToolSpec(
        tool_id=tool_id,
        description="test tool",
        input_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        process=ProcessSpec(command=("{python}", "-c", source)),
        limits=Limits(**limits),
    )


TOOLS = [
    tool("fine", "print('fine')"),
    tool("busy", "while True: pass", cpu_seconds=1, wall_time_seconds=60),
    tool("chatty", "import sys\nwhile True: sys.stdout.write('x' * 65536)", output_bytes=100_000),
    tool("broken", "raise SystemExit(3)"),
]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_servicer(engine: AsyncEngine, audit: FakeAudit, *, available: bool) -> ToolServicer:
    runner = BwrapRunner(BwrapConfig())
    runner.mark_available(None if available else "probe failed (test)")
    registry = Registry(ToolStore(engine), TOOLS)
    return ToolServicer(registry, Executions(runner, ExecutionStore(engine)), audit)  # type: ignore[arg-type]


async def run(servicer: ToolServicer, name: str, **arguments: Any) -> tools_pb2.ToolResult:
    request = tools_pb2.ExecuteToolRequest(
        name=f"tools/{name}", arguments=struct_from_dict(arguments), run="runs/r1", step_id="s1"
    )
    with context.bound(CALLER):
        responses = [r async for r in servicer.ExecuteTool(request, CTX)]
    return responses[-1].result


async def test_a_fine_call_is_audited_with_caller_decision_and_usage(engine: AsyncEngine) -> None:
    audit = FakeAudit()
    servicer = make_servicer(engine, audit, available=True)
    before = sample("tool_calls_total", tool="fine", outcome="ok")
    result = await run(servicer, "fine")
    assert result.exit_code == 0
    ((action, resource, outcome, details),) = audit.events
    assert (action, resource, outcome) == ("tool.execute", "tools/fine", "ok")
    assert details["caller"] == "worker" and details["decision"] == "allow"
    assert details["run"] == "runs/r1" and details["step_id"] == "s1" and len(details["args_digest"]) == 64
    assert details["cpu_seconds"] > 0 and details["max_rss_bytes"] > 0 and details["wall_seconds"] > 0
    assert "denial" not in details
    assert sample("tool_calls_total", tool="fine", outcome="ok") == before + 1
    assert sample("tool_call_duration_seconds_count", tool="fine") >= 1


@pytest.mark.parametrize(
    ("name", "denial"), [("busy", "cpu_seconds"), ("chatty", "output_bytes")], ids=["cpu", "output"]
)
async def test_a_call_stopped_by_a_limit_is_denied_and_counted(
    engine: AsyncEngine, name: str, denial: str
) -> None:
    audit = FakeAudit()
    servicer = make_servicer(engine, audit, available=True)
    before = sample("sandbox_denials_total", tool=name, reason=denial)
    await run(servicer, name)
    ((_, _, outcome, details),) = audit.events
    assert outcome == "denied" and details["denial"] == denial and details["decision"] == "allow"
    assert sample("sandbox_denials_total", tool=name, reason=denial) == before + 1
    assert sample("tool_calls_total", tool=name, outcome="denied") >= 1


async def test_a_failing_tool_is_failed_not_denied(engine: AsyncEngine) -> None:
    audit = FakeAudit()
    servicer = make_servicer(engine, audit, available=True)
    result = await run(servicer, "broken")
    assert result.exit_code == 3
    assert audit.events[-1][2] == "failed" and "denial" not in audit.events[-1][3]


async def test_an_unavailable_sandbox_refuses_audits_and_counts(engine: AsyncEngine) -> None:
    audit = FakeAudit()
    servicer = make_servicer(engine, audit, available=False)
    before = sample("sandbox_denials_total", tool="fine", reason="sandbox_unavailable")
    with pytest.raises(FailedPrecondition) as refused:
        await run(servicer, "fine")
    assert refused.value.reason == "SANDBOX_UNAVAILABLE"
    assert "probe failed (test)" in str(refused.value)
    ((_, _, outcome, details),) = audit.events
    assert (
        outcome == "denied" and details["decision"] == "deny" and details["reason"] == "sandbox_unavailable"
    )
    assert sample("sandbox_denials_total", tool="fine", reason="sandbox_unavailable") == before + 1


async def test_invalid_arguments_are_audited_as_denied(engine: AsyncEngine) -> None:
    audit = FakeAudit()
    servicer = make_servicer(engine, audit, available=True)
    with pytest.raises(InvalidArgument):
        await run(servicer, "fine", n="not a number")
    ((_, _, outcome, details),) = audit.events
    assert outcome == "denied" and details["reason"] == "invalid_arguments"


async def test_a_keyed_call_to_an_unavailable_sandbox_is_refused_and_not_recorded(
    engine: AsyncEngine,
) -> None:
    audit = FakeAudit()
    servicer = make_servicer(engine, audit, available=False)
    request = tools_pb2.ExecuteToolRequest(name="tools/fine", idempotency_key="runs/r1/s1/1", run="runs/r1")
    for _ in range(2):  # nothing was recorded for the key: a retry is refused again, not replayed
        with context.bound(CALLER), pytest.raises(FailedPrecondition) as refused:
            _ = [r async for r in servicer.ExecuteTool(request, CTX)]
        assert refused.value.reason == "SANDBOX_UNAVAILABLE"
    assert [(e[2], e[3]["reason"]) for e in audit.events] == [("denied", "sandbox_unavailable")] * 2

"""StepCalls over the mesh: model-gateway, tool-sandbox and memory, with run/step idempotency keys."""

from __future__ import annotations

import re
from typing import Any

import grpc
from agentflow.memory.v1 import memory_pb2, memory_pb2_grpc
from agentflow.models.v1 import models_pb2, models_pb2_grpc
from agentflow.tools.v1 import tools_pb2, tools_pb2_grpc
from agentflow_runtime import context
from agentflow_runtime.clients import Channels
from agentflow_runtime.errors import from_rpc_error
from agentflow_runtime.protojson import py_from_value, struct_from_dict

from agentflow_worker.agent_calls import TurnReply, TurnRequest
from agentflow_worker.agent_protos import reply_from_proto, request_to_proto
from agentflow_worker.calls import Emit, StepFailed, StepResult, idempotency_key
from agentflow_worker.model import EventType, RunRecord, error_json

_ROLES = {
    "system": models_pb2.ROLE_SYSTEM,
    "user": models_pb2.ROLE_USER,
    "assistant": models_pb2.ROLE_ASSISTANT,
}
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
DEFAULT_TIMEOUT = 300.0
DEADLINE_GRACE = 5.0
STOP_DEADLINE = 5.0


def _failed(exc: grpc.aio.AioRpcError, step_id: str) -> StepFailed:
    err = from_rpc_error(exc)
    error = error_json(err.code.name, f"step {step_id}: {err.message}", err.reason, **err.metadata)
    if err.violations:
        error["violations"] = [{"field": f, "description": d} for f, d in err.violations]
    return StepFailed(error, retryable=err.code in _RETRYABLE)


def _timeout(params: dict[str, Any]) -> float:
    """The RPC deadline: a backstop a little beyond the step timeout, which the engine enforces itself
    (so that it, not the transport, decides a timed-out attempt and stops it at the callee)."""
    step_timeout = params.get("timeout_seconds")
    return float(step_timeout) + DEADLINE_GRACE if step_timeout else DEFAULT_TIMEOUT


class MeshStepCalls:
    """Calls the mesh services on a run's behalf (its tenant bound for the call's metadata)."""

    def __init__(self, channels: Channels) -> None:
        self.models = models_pb2_grpc.ModelServiceStub(channels.get("model-gateway"))
        self.tools = tools_pb2_grpc.ToolServiceStub(channels.get("tool-sandbox"))
        self.memories = memory_pb2_grpc.MemoryServiceStub(channels.get("memory"))

    async def model(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        messages = [
            models_pb2.Message(role=_ROLES[m.get("role", "user")], content=str(m.get("content", "")))
            for m in params.get("messages") or []
        ]
        if params.get("system"):
            messages.insert(0, models_pb2.Message(role=models_pb2.ROLE_SYSTEM, content=str(params["system"])))
        if params.get("prompt") is not None:
            messages.append(models_pb2.Message(role=models_pb2.ROLE_USER, content=str(params["prompt"])))
        model = str(params.get("model") or "local")
        request = models_pb2.CompleteRequest(
            model=model if model.startswith("models/") else f"models/{model}",
            messages=messages,
            max_tokens=int(params.get("max_tokens") or 0),
            temperature=float(params.get("temperature") or 0.0),
            idempotency_key=idempotency_key(run, step_id, attempt),
            run=run.name,
            step_id=step_id,
        )
        with context.bound(context.CallContext(tenant=run.tenant, caller="worker")):
            try:
                reply = await self.models.Complete(request, timeout=_timeout(params))
            except grpc.aio.AioRpcError as exc:
                raise _failed(exc, step_id) from exc
        usage = {"input_tokens": reply.usage.input_tokens, "output_tokens": reply.usage.output_tokens}
        output = {
            "text": reply.message.content,
            "model": reply.model,
            "finish_reason": reply.finish_reason,
            "usage": usage,
            "cost_usd": reply.cost_usd,
        }
        return StepResult(
            output, reply.usage.input_tokens, reply.usage.output_tokens, {"replayed": reply.replayed}
        )

    async def complete_turn(self, run: RunRecord, step_id: str, request: TurnRequest, key: str) -> TurnReply:
        """One model call of an agent step (tools offered, the agent named), keyed by its turn."""
        message = request_to_proto(request, run.name, step_id, key)
        with context.bound(context.CallContext(tenant=run.tenant, caller="worker")):
            try:
                reply = await self.models.Complete(message, timeout=request.timeout)
            except grpc.aio.AioRpcError as exc:
                raise _failed(exc, step_id) from exc
        return reply_from_proto(reply)

    async def tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        return await self.execute_tool(run, step_id, params, emit, key=idempotency_key(run, step_id, attempt))

    async def execute_tool(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, key: str
    ) -> StepResult:
        """ExecuteTool under `key`: a tool step's call, and an agent's tool call (its key names the turn)."""
        tool = str(params.get("tool", ""))
        request = tools_pb2.ExecuteToolRequest(
            name=tool if tool.startswith("tools/") else f"tools/{tool}",
            arguments=struct_from_dict(params.get("arguments") or {}),
            idempotency_key=key,
            run=run.name,
            step_id=step_id,
        )
        result: tools_pb2.ToolResult | None = None
        with context.bound(context.CallContext(tenant=run.tenant, caller="worker")):
            try:
                async for reply in self.tools.ExecuteTool(request, timeout=_timeout(params)):
                    if reply.HasField("chunk"):
                        stream = (
                            "stderr" if reply.chunk.stream == tools_pb2.OUTPUT_STREAM_STDERR else "stdout"
                        )
                        text = reply.chunk.data.decode("utf-8", errors="replace")
                        await emit(EventType.TOOL_OUTPUT, step_id, {"stream": stream, "text": text})
                    elif reply.HasField("result"):
                        result = reply.result
            except grpc.aio.AioRpcError as exc:
                raise _failed(exc, step_id) from exc
        if result is None:
            raise StepFailed(
                error_json("UNAVAILABLE", f"step {step_id}: tool stream ended without a result"), True
            )
        output = py_from_value(result.output)
        if result.timed_out or result.exit_code != 0:
            why = "timed out" if result.timed_out else f"exited with status {result.exit_code}"
            raise StepFailed(
                error_json(
                    "ABORTED" if result.timed_out else "FAILED_PRECONDITION",
                    f"step {step_id}: tool {tool} {why}: {result.stderr[-500:]}".rstrip(": "),
                    "TOOL_TIMED_OUT" if result.timed_out else "TOOL_FAILED",
                )
            )
        meta = {"exit_code": result.exit_code, "truncated": result.truncated, "replayed": result.replayed}
        return StepResult(output, meta=meta)

    async def stop(
        self, run: RunRecord, step_id: str, kind: str, params: dict[str, Any], attempt: int
    ) -> None:
        """CancelToolExecution for a tool step's attempt; model and memory calls end with their caller."""
        if kind != "tool":
            return
        await self.cancel_tool(run, str(params.get("tool", "")), idempotency_key(run, step_id, attempt))

    async def cancel_tool(self, run: RunRecord, tool: str, key: str) -> None:
        """CancelToolExecution of `tool` under `key` (a tool step's attempt, or an agent's tool call)."""
        request = tools_pb2.CancelToolExecutionRequest(
            name=tool if tool.startswith("tools/") else f"tools/{tool}", idempotency_key=key
        )
        with context.bound(context.CallContext(tenant=run.tenant, caller="worker")):
            await self.tools.CancelToolExecution(request, timeout=STOP_DEADLINE)

    async def memory(
        self, run: RunRecord, step_id: str, params: dict[str, Any], emit: Emit, *, attempt: int = 1
    ) -> StepResult:
        op = str(params.get("op", "put"))
        timeout = _timeout(params)
        with context.bound(context.CallContext(tenant=run.tenant, caller="worker")):
            try:
                return StepResult(await self._memory_op(op, run, step_id, params, timeout))
            except grpc.aio.AioRpcError as exc:
                raise _failed(exc, step_id) from exc

    async def _memory_op(
        self, op: str, run: RunRecord, step_id: str, params: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        labels = {str(k): str(v) for k, v in (params.get("labels") or {}).items()}
        if op == "put":
            memory_id = str(params.get("memory_id") or _memory_id(run, step_id))
            memory = memory_pb2.Memory(
                name=f"memories/{memory_id}",
                subject=str(params.get("subject") or ""),
                namespace=str(params.get("namespace") or ""),
                text=str(params.get("text") or ""),
                labels=labels,
                ttl_seconds=int(params.get("ttl_seconds") or 0),
                metadata=struct_from_dict(params.get("metadata") or None),
            )
            put = await self.memories.PutMemory(memory_pb2.PutMemoryRequest(memory=memory), timeout=timeout)
            return {"name": put.name, "text": put.text, "subject": put.subject}
        if op == "query":
            query = memory_pb2.QueryMemoriesRequest(
                text=str(params.get("text") or ""),
                top_k=int(params.get("top_k") or 0),
                subject=str(params.get("subject") or ""),
                namespace=str(params.get("namespace") or ""),
                labels=labels,
            )
            found = await self.memories.QueryMemories(query, timeout=timeout)
            return {
                "results": [
                    {
                        "name": r.memory.name,
                        "text": r.memory.text,
                        "subject": r.memory.subject,
                        "score": r.score,
                    }
                    for r in found.results
                ]
            }
        if op == "get":
            got = await self.memories.GetMemory(
                memory_pb2.GetMemoryRequest(name=f"memories/{params.get('memory_id', '')}"), timeout=timeout
            )
            return {"name": got.name, "text": got.text, "subject": got.subject}
        if op == "erase":
            erased = await self.memories.EraseMemories(
                memory_pb2.EraseMemoriesRequest(subject=str(params.get("subject") or "")), timeout=timeout
            )
            return {"erased_count": erased.erased_count}
        raise StepFailed(
            error_json("INVALID_ARGUMENT", f"step {step_id}: unknown memory op {op!r}", "MEMORY_OP")
        )


def _memory_id(run: RunRecord, step_id: str) -> str:
    """A deterministic id per run and step, so a retried put writes the same memory."""
    return re.sub(r"[^a-z0-9._-]", "-", f"{run.run_id}.{step_id}".lower())[:128]

"""Protobuf <-> domain translation for ToolService."""

from __future__ import annotations

from agentflow.common.v1 import common_pb2
from agentflow.tools.v1 import tools_pb2
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict, timestamp, value_from_py

from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream
from agentflow_tool_sandbox.mcp.convert import access_to_proto, mcp_origin
from agentflow_tool_sandbox.spec import Limits, ProcessSpec, ToolSpec

_STREAMS = {Stream.STDOUT: tools_pb2.OUTPUT_STREAM_STDOUT, Stream.STDERR: tools_pb2.OUTPUT_STREAM_STDERR}


def tool_from_proto(tool_id: str, tool: tools_pb2.Tool) -> ToolSpec:
    """The tool a CreateTool request registers (output-only fields ignored)."""
    return ToolSpec(
        tool_id=tool_id,
        description=tool.description,
        input_schema=dict_from_struct(tool.input_schema),
        process=ProcessSpec(command=tuple(tool.process.command), env=dict(tool.process.env)),
        limits=Limits(
            wall_time_seconds=tool.limits.wall_time_seconds,
            cpu_seconds=tool.limits.cpu_seconds,
            memory_bytes=tool.limits.memory_bytes,
            output_bytes=tool.limits.output_bytes,
        ).with_defaults(),
    )


def tool_to_proto(tool: ToolSpec) -> tools_pb2.Tool:
    """The Tool message for a registered tool, limits with their defaults filled in."""
    limits = tool.limits.with_defaults()
    return tools_pb2.Tool(
        name=tool.name,
        description=tool.description,
        input_schema=struct_from_dict(dict(tool.input_schema)),
        process=tools_pb2.ProcessSpec(command=list(tool.process.command), env=dict(tool.process.env)),
        limits=tools_pb2.ExecutionLimits(
            wall_time_seconds=limits.wall_time_seconds,
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_bytes,
            output_bytes=limits.output_bytes,
        ),
        origin=tool.origin,
        create_time=timestamp(tool.create_time),
        mcp=mcp_origin(tool),
        access=None if tool.access is None else access_to_proto(tool.access),
    )


def event_to_proto(event: Event) -> tools_pb2.ExecuteToolResponse:
    """One ExecuteTool response message for an execution event."""
    if isinstance(event, Chunk):
        chunk = tools_pb2.OutputChunk(seq=event.seq, stream=_STREAMS[event.stream], data=event.data)
        return tools_pb2.ExecuteToolResponse(chunk=chunk)
    return tools_pb2.ExecuteToolResponse(result=result_to_proto(event))


def result_to_proto(result: Result) -> tools_pb2.ToolResult:
    """The ToolResult message for a result."""
    return tools_pb2.ToolResult(
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        truncated=result.truncated,
        output=value_from_py(result.output),
        stderr=result.stderr,
        usage=common_pb2.ResourceUsage(
            cpu_seconds=result.usage.cpu_seconds,
            max_rss_bytes=result.usage.max_rss_bytes,
            wall_seconds=result.usage.wall_seconds,
        ),
        replayed=result.replayed,
    )

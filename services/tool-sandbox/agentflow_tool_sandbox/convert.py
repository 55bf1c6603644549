"""Protobuf <-> domain translation for ToolService."""

from __future__ import annotations

from agentflow.common.v1 import common_pb2
from agentflow.tools.v1 import tools_pb2
from agentflow_runtime.protojson import dict_from_struct, struct_from_dict, timestamp, value_from_py

from agentflow_tool_sandbox.events import Chunk, Event, Result, Stream
from agentflow_tool_sandbox.mcp.convert import access_to_proto, mcp_origin
from agentflow_tool_sandbox.spec import EgressRule, Limits, Permissions, ProcessSpec, ToolSpec

_STREAMS = {Stream.STDOUT: tools_pb2.OUTPUT_STREAM_STDOUT, Stream.STDERR: tools_pb2.OUTPUT_STREAM_STDERR}


def tool_from_proto(tool_id: str, tool: tools_pb2.Tool) -> ToolSpec:
    """The tool a CreateTool (or UpdateTool) request describes (output-only fields ignored)."""
    return ToolSpec(
        tool_id=tool_id,
        description=tool.description,
        input_schema=dict_from_struct(tool.input_schema),
        process=ProcessSpec(command=tuple(tool.process.command), env=dict(tool.process.env)),
        limits=limits_from_proto(tool),
        permissions=permissions_from_proto(tool.profile),
    )


def limits_from_proto(tool: tools_pb2.Tool) -> Limits:
    """The caps: each from `profile` when set there, else from the older `limits`, else the default."""
    profile, legacy = tool.profile, tool.limits
    return Limits(
        wall_time_seconds=profile.wall_time_seconds or legacy.wall_time_seconds,
        cpu_seconds=profile.cpu_seconds or legacy.cpu_seconds,
        memory_bytes=profile.memory_bytes or legacy.memory_bytes,
        output_bytes=profile.output_bytes or legacy.output_bytes,
        max_processes=profile.max_processes,
    ).with_defaults()


def limits_field(tool: tools_pb2.Tool) -> str:
    """Where the request put its caps (for violation field paths): `profile`, or the older `limits`."""
    profile = tool.profile
    caps = (profile.wall_time_seconds, profile.cpu_seconds, profile.memory_bytes, profile.output_bytes)
    return "profile" if any(caps) or profile.max_processes or not tool.HasField("limits") else "limits"


def permissions_from_proto(profile: tools_pb2.ExecutionProfile) -> Permissions:
    """The grants of an ExecutionProfile message."""
    return Permissions(
        egress=tuple(EgressRule(host=rule.host, port=rule.port) for rule in profile.egress),
        read_only_paths=tuple(profile.read_only_paths),
        writable_paths=tuple(profile.writable_paths),
        env=tuple(profile.env),
    )


def tool_to_proto(tool: ToolSpec) -> tools_pb2.Tool:
    """The Tool message for a registered tool, its profile complete (defaults filled in)."""
    limits = tool.limits.with_defaults()
    permissions = tool.permissions
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
        profile=tools_pb2.ExecutionProfile(
            egress=[tools_pb2.EgressRule(host=r.host, port=r.port) for r in permissions.egress],
            read_only_paths=list(permissions.read_only_paths),
            writable_paths=list(permissions.writable_paths),
            env=list(permissions.env),
            wall_time_seconds=limits.wall_time_seconds,
            cpu_seconds=limits.cpu_seconds,
            memory_bytes=limits.memory_bytes,
            max_processes=limits.max_processes,
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

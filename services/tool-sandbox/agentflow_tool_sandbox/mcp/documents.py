"""A registration as a plain document (the catalog YAML shape; also how the store keeps it) and back."""

from __future__ import annotations

from typing import Any

from agentflow_tool_sandbox.mcp.model import ServerSpec, StdioTransport
from agentflow_tool_sandbox.mcp.parse import parse_server


def spec_to_document(spec: ServerSpec) -> dict[str, Any]:
    """The registration's fields (id, transport, policy, access) as JSON-compatible values."""
    transport = spec.transport
    document: dict[str, Any] = {
        "id": spec.server_id,
        "description": spec.description,
        "timeout_seconds": spec.timeout_seconds,
        "retry": {
            "max_attempts": spec.retry.max_attempts,
            "initial_backoff_seconds": spec.retry.initial_backoff_seconds,
            "max_backoff_seconds": spec.retry.max_backoff_seconds,
            "multiplier": spec.retry.multiplier,
        },
        "circuit_breaker": {
            "failure_threshold": spec.breaker.failure_threshold,
            "open_seconds": spec.breaker.open_seconds,
        },
        "access": {"roles": list(spec.access.roles), "tenants": list(spec.access.tenants)},
    }
    if isinstance(transport, StdioTransport):
        document["stdio"] = {
            "command": list(transport.command),
            "env": dict(transport.env),
            "pass_env": list(transport.pass_env),
        }
    else:
        document["http"] = {
            "url": transport.url,
            "headers": dict(transport.headers),
            "headers_from_env": dict(transport.headers_from_env),
        }
    return document


def spec_from_document(document: dict[str, Any], server_id: str) -> ServerSpec:
    """The registration a stored document holds (it was valid when stored; variable names that were allowed
    then are refused when connecting)."""
    spec, problems = parse_server(document, server_id=server_id, check_env_names=False)
    if spec is None:
        raise ValueError(f"stored MCP server {server_id!r} is no longer valid: {problems}")
    return spec

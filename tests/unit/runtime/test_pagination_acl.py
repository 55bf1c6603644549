"""Page tokens and the per-RPC caller allow-list."""

from __future__ import annotations

import pytest
from agentflow_runtime import acl
from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.pagination import clamp_page_size, decode_token, encode_token


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    assert decode_token(encode_token(150)) == 150
    assert decode_token("") == 0
    with pytest.raises(InvalidArgument) as caught:
        decode_token("not-a-token!")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_page_size_is_clamped() -> None:
    assert clamp_page_size(0) == 50
    assert clamp_page_size(10_000) == 500
    with pytest.raises(InvalidArgument):
        clamp_page_size(-1)


def test_only_services_append_audit_and_only_worker_or_edge_execute_tools() -> None:
    append = "/agentflow.audit.v1.AuditIngestService/AppendAuditEvents"
    execute = "/agentflow.tools.v1.ToolService/ExecuteTool"
    assert acl.allowed(append, "worker")
    assert not acl.allowed(append, "client")
    assert not acl.allowed(append, "audit")
    assert acl.allowed(execute, "worker") and acl.allowed(execute, "gateway")
    assert not acl.allowed(execute, "memory")
    assert acl.allowed("/agentflow.runs.v1.RunService/GetRun", "client")
    assert not acl.allowed("/agentflow.runs.v1.RunService/GetRun", "")
    assert not acl.allowed("/agentflow.runs.v1.RunService/GetRun", "stranger")

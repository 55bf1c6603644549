"""Tool access: native defaults, imported tools denied unless granted, tenants for catalog servers."""

from __future__ import annotations

import pytest
from agentflow_runtime.errors import PermissionDenied
from agentflow_tool_sandbox.mcp.access import check, permits
from agentflow_tool_sandbox.spec import McpBinding, ProcessSpec, ToolAccess, ToolSpec


def tool(access: ToolAccess | None = None, tenant: str | None = None) -> ToolSpec:
    binding = None if tenant is None else McpBinding(tenant, "srv", "t")
    return ToolSpec("t", "d", {}, ProcessSpec(()), mcp=binding, access=access)


def test_native_tools_default_to_developers_and_admins() -> None:
    native = tool()
    assert permits(native, "acme", "developer") and permits(native, "acme", "admin")
    assert permits(native, "acme", "")  # a workflow step acts as developer
    assert not permits(native, "acme", "viewer")


def test_imported_tools_are_denied_unless_granted() -> None:
    assert not permits(tool(ToolAccess(), tenant="acme"), "acme", "admin")
    granted = tool(ToolAccess(roles=("viewer",)), tenant="acme")
    assert permits(granted, "acme", "viewer") and not permits(granted, "acme", "developer")
    assert not permits(granted, "other", "viewer")


def test_catalog_server_tools_need_the_tenant() -> None:
    some = tool(ToolAccess(roles=("developer",), tenants=("acme",)), tenant="")
    assert permits(some, "acme", "developer") and not permits(some, "zeta", "developer")
    everyone = tool(ToolAccess(roles=("developer",), tenants=("*",)), tenant="")
    assert permits(everyone, "zeta", "")
    with pytest.raises(PermissionDenied) as denied:
        check(some, "zeta", "developer")
    assert denied.value.reason == "TOOL_ACCESS_DENIED"

"""Who may use a tool. A caller needs its role among the tool's roles and, for a tool every tenant sees (a
catalog MCP server's), its tenant among the tool's tenants (`*` = any).

- Native tools carry no access section: every role that may execute tools at the edge (developer, admin).
- Imported tools carry their server's grants; a server registered without `access` grants nobody.
- A workflow step (the worker calls with no role) acts as `developer`, the least role that can start a run.
"""

from __future__ import annotations

from agentflow_runtime.errors import PermissionDenied

from agentflow_tool_sandbox.spec import ToolSpec

DEFAULT_ROLES = frozenset({"developer", "admin"})
RUN_ROLE = "developer"
ANY_TENANT = "*"


def permits(tool: ToolSpec, tenant: str, role: str) -> bool:
    """Whether a caller of `tenant` with `role` ("" for a workflow step) may list and call `tool`."""
    role = role or RUN_ROLE
    if tool.access is None:
        return role in DEFAULT_ROLES
    if role not in tool.access.roles:
        return False
    if tool.mcp is not None and tool.mcp.tenant:
        return tool.mcp.tenant == tenant  # the tenant's own registration
    return ANY_TENANT in tool.access.tenants or tenant in tool.access.tenants


def check(tool: ToolSpec, tenant: str, role: str) -> None:
    """PERMISSION_DENIED (TOOL_ACCESS_DENIED) unless `permits`."""
    if not permits(tool, tenant, role):
        raise PermissionDenied(
            f"{tool.name} is not granted to role {role or RUN_ROLE!r} of tenant {tenant!r}",
            reason="TOOL_ACCESS_DENIED",
            metadata={"tool": tool.name, "role": role or RUN_ROLE, "tenant": tenant},
        )

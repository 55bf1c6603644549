"""Role-based access at the edge: which role each public method needs.

- viewer: read methods only (those whose HTTP rule is a GET, e.g. `GetRun`, `ListTools`, `WatchRun`);
- developer: every method except the audit log's;
- admin: everything, including `AuditService` (list and verify).

Tenant isolation is enforced by the services from the `x-af-tenant` the edge sets from the token.
"""

from __future__ import annotations

from agentflow_runtime.errors import PermissionDenied

from agentflow_gateway.auth import Principal, Role
from agentflow_gateway.routes import Method

__all__ = ["allows", "authorize", "required_role"]

_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2}
_ADMIN_SERVICES = frozenset({"agentflow.audit.v1.AuditService"})


def required_role(method: Method) -> Role:
    """The least role that may call `method`."""
    if method.service in _ADMIN_SERVICES:
        return Role.ADMIN
    return Role.VIEWER if method.read_only else Role.DEVELOPER


def allows(principal: Principal, method: Method) -> bool:
    """Whether the principal's role may call `method`."""
    return _RANK[principal.role] >= _RANK[required_role(method)]


def authorize(principal: Principal, method: Method) -> None:
    """Raises PERMISSION_DENIED when the principal's role is below what the method needs."""
    needed = required_role(method)
    if _RANK[principal.role] < _RANK[needed]:
        raise PermissionDenied(
            f"role {principal.role.value!r} may not call {method.service}.{method.name}",
            reason="ROLE_NOT_ALLOWED",
            metadata={
                "role": principal.role.value,
                "required_role": needed.value,
                "method": method.grpc_path,
            },
        )

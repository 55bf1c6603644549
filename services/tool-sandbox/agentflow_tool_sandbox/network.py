"""How a sandboxed tool gets network access: never directly; only through an egress provider.

Without egress rules in its profile a tool runs in its own empty network namespace (loopback only). With
rules, the bubblewrap backend asks the configured `EgressProvider` (the allow-listing egress proxy, in
`egress.py`) to `attach` for the duration of the call; the provider answers with what to add to the
sandbox: mounts (typically the proxy's Unix socket), environment variables (e.g. proxy settings), a
command to run before the tool (e.g. a loopback forwarder) and, only if it really needs it, the host
network namespace. Without a provider, such a call is denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from agentflow_tool_sandbox.spec import EgressRule


@dataclass(frozen=True)
class Mount:
    """A host path bound into the sandbox at `target` (read-only unless `writable`)."""

    source: str
    target: str
    writable: bool = False


@dataclass(frozen=True)
class NetworkAccess:
    """What an egress provider adds to one sandboxed call."""

    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    command_prefix: tuple[str, ...] = ()
    """Run first inside the sandbox, as the tool's uid and under its limits, with the tool's argv appended
    (e.g. a forwarder from the sandbox's loopback to the proxy's socket that then execs the tool);
    `{python}` is the service's interpreter. Whatever it runs must be bound in through `mounts`."""
    share_host_network: bool = False
    """Keep the host network namespace (discouraged: the provider should rely on a Unix socket)."""


@dataclass(frozen=True)
class CallInfo:
    """Who the call is for, so the provider can log and audit each connection attempt."""

    tool_id: str
    tenant: str = ""
    principal: str = ""


class EgressProvider(Protocol):
    """Gives a call access to exactly the `rules` destinations while the context is open."""

    def attach(
        self, call: CallInfo, rules: Sequence[EgressRule]
    ) -> AbstractAsyncContextManager[NetworkAccess]: ...

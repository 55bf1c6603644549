"""What an API-registered MCP server may use of the tool-sandbox's host; catalog servers are the operator's.

- Host paths and variables: the operator's delegation for API tools (`validation.Delegation`,
  `AF_SANDBOX_API_PATH_ROOTS`, `AF_SANDBOX_API_ENV`), the same rule (`path_problem`, `env_problem`):
  the directory of every absolute path in a stdio command (what the sandbox would make readable) must be
  below a delegated root, symlinks resolved; `pass_env` and `headers_from_env` may name delegated
  variables only.
- Network: an HTTP server's host must resolve to public addresses only, unless the operator allows it
  (`destinations`, `AF_MCP_API_ALLOWED_HOSTS`).

Checked at registration (field violations) and again before every connection (a registration stored
before a delegation was withdrawn does not keep what it had).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

from agentflow_tool_sandbox.mcp import destinations
from agentflow_tool_sandbox.mcp.destinations import AllowedHosts
from agentflow_tool_sandbox.mcp.model import HttpTransport, ServerSpec, StdioTransport
from agentflow_tool_sandbox.spec import ORIGIN_CATALOG
from agentflow_tool_sandbox.validation import (
    NOTHING_DELEGATED,
    Delegation,
    Violation,
    env_problem,
    path_problem,
)


@dataclass(frozen=True)
class ServerPolicy:
    """The operator's delegation and allowed hosts, applied to API-registered servers."""

    delegation: Delegation = NOTHING_DELEGATED
    allowed_hosts: AllowedHosts = field(default_factory=AllowedHosts)

    @staticmethod
    def applies(spec: ServerSpec) -> bool:
        """Whether `spec` is restricted (every server but the catalog's)."""
        return spec.origin != ORIGIN_CATALOG

    def problems(self, spec: ServerSpec) -> list[Violation]:
        """What `spec` asks for that it may not have, without resolving names (fields as in the registration:
        `stdio.command[3]`, `http.url`, ...)."""
        if not self.applies(spec):
            return []
        transport = spec.transport
        if isinstance(transport, StdioTransport):
            return self._stdio(transport)
        return self._http(transport)

    async def check(self, spec: ServerSpec) -> list[Violation]:
        """`problems`, and the addresses the server's host resolves to."""
        problems = self.problems(spec)
        transport = spec.transport
        if not self.applies(spec) or not isinstance(transport, HttpTransport) or problems:
            return problems
        host, port = destinations.url_destination(transport.url)
        refused = await destinations.destination_problem(host, port, self.allowed_hosts)
        return [("http.url", refused)] if refused else []

    def _stdio(self, transport: StdioTransport) -> list[Violation]:
        problems: list[Violation] = []
        for index, arg in enumerate(transport.command):
            if index == 0 or not arg.startswith("/"):
                continue
            problem = self.script_path_problem(arg)
            if problem is not None:
                problems.append((f"stdio.command[{index}]", problem))
        for index, name in enumerate(transport.pass_env):
            problem = env_problem(name, self.delegation)
            if problem is not None:
                problems.append((f"stdio.pass_env[{index}]", problem))
        return problems

    def script_path_problem(self, arg: str) -> str | None:
        """Why the directory of absolute path `arg` (bound read-only when `arg` is a file) may not be
        readable by the server: it, and where its symlinks lead, must be below a delegated root."""
        directory = posixpath.dirname(posixpath.normpath(arg))
        problem = path_problem(directory, writable=False, delegation=self.delegation)
        if problem is None and os.path.realpath(directory) != directory:
            real = os.path.realpath(directory)
            problem = path_problem(real, writable=False, delegation=self.delegation)
            if problem is not None:
                problem = f"leads to {real}: {problem}"
        return None if problem is None else f"{directory} (what the server would read): {problem}"

    def _http(self, transport: HttpTransport) -> list[Violation]:
        problems: list[Violation] = []
        try:
            host, port = destinations.url_destination(transport.url)
        except ValueError as exc:
            problems.append(("http.url", str(exc)))
        else:
            address = destinations.literal(host)
            if address is not None and not self.allowed_hosts.allows(host, port):
                refused = destinations.refused(host, port, [address])
                if refused is not None:
                    problems.append(("http.url", refused))
        for header, name in transport.headers_from_env.items():
            problem = env_problem(name, self.delegation)
            if problem is not None:
                problems.append((f"http.headers_from_env.{header}", problem))
        return problems

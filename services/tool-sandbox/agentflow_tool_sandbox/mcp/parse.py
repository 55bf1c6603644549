"""An MCP server registration from a mapping (a catalog YAML file, or an API message as a dict), checked.

Every problem is reported as a (field, description) violation; zero or missing numbers take their default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentflow_runtime.breaker import BreakerConfig

from agentflow_tool_sandbox.mcp.model import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_TIMEOUT_SECONDS,
    HttpTransport,
    RetryPolicy,
    ServerSpec,
    StdioTransport,
    Transport,
)
from agentflow_tool_sandbox.mcp.naming import MAX_SERVER_ID, valid_server_id
from agentflow_tool_sandbox.spec import ORIGIN_API, ToolAccess
from agentflow_tool_sandbox.validation import Violation, env_problem

ROLES = frozenset({"viewer", "developer", "admin"})
SERVER_DIR_PLACEHOLDER = "{server_dir}"
_FIELDS = frozenset(
    {"id", "description", "stdio", "http", "timeout_seconds", "retry", "circuit_breaker", "access"}
)
_IGNORED = frozenset(
    {"name", "origin", "state", "circuit_state", "tools", "last_error", "create_time", "sync_time"}
)
"""Output-only fields of the API message: accepted and ignored."""


def parse_server(
    document: Any,
    *,
    server_id: str | None = None,
    server_dir: Path | None = None,
    origin: str = ORIGIN_API,
    check_env_names: bool = True,
) -> tuple[ServerSpec | None, list[Violation]]:
    """The server a mapping describes (None when it has problems) and every problem found.

    `server_id` overrides the mapping's `id` (the API passes it separately); `server_dir` expands
    `{server_dir}` in a stdio command (catalog files). The variables `pass_env` and `headers_from_env` name
    must be valid and never `AF_*` (the service's own configuration, its secrets); `check_env_names` False
    only for registrations stored before that was checked (connecting refuses them: `policy`, `transports`).
    """
    if not isinstance(document, Mapping):
        return None, [("", "must be a mapping of MCP server fields")]
    problems: list[Violation] = [
        (str(k), "unknown field") for k in document if k not in _FIELDS and k not in _IGNORED
    ]
    sid = server_id if server_id is not None else document.get("id")
    if not isinstance(sid, str) or not valid_server_id(sid):
        problems.append(
            (
                "id" if server_id is None else "mcp_server_id",
                "a lowercase letter, then letters or digits with single dashes between, "
                f"at most {MAX_SERVER_ID} characters",
            )
        )
        sid = ""
    description = document.get("description", "") or ""
    if not isinstance(description, str):
        problems.append(("description", "must be a string"))
        description = ""
    transport = _transport(document, server_dir, problems)
    if transport is not None and check_env_names:
        problems.extend(_env_name_problems(transport))
    timeout = _number(
        document, "timeout_seconds", DEFAULT_TIMEOUT_SECONDS, 0.0, MAX_TIMEOUT_SECONDS, problems
    )
    retry = _retry(document.get("retry") or {}, problems)
    breaker = _breaker(document.get("circuit_breaker") or {}, problems)
    access = _access(document.get("access") or {}, problems)
    if problems or transport is None:
        return None, problems
    spec = ServerSpec(
        server_id=sid,
        transport=transport,
        description=description,
        timeout_seconds=timeout,
        retry=retry,
        breaker=breaker,
        access=access,
        origin=origin,
    )
    return spec, problems


def _transport(
    document: Mapping[str, Any], server_dir: Path | None, problems: list[Violation]
) -> Transport | None:
    stdio, http = document.get("stdio"), document.get("http")
    if (stdio is None) == (http is None):
        problems.append(("transport", "exactly one of `stdio` or `http` is required"))
        return None
    if stdio is not None:
        return _stdio(stdio, server_dir, problems)
    return _http(http, problems)


def _stdio(raw: Any, server_dir: Path | None, problems: list[Violation]) -> StdioTransport | None:
    if not isinstance(raw, Mapping):
        problems.append(("stdio", "must be a mapping with `command`"))
        return None
    problems.extend((f"stdio.{k}", "unknown field") for k in raw if k not in {"command", "env", "pass_env"})
    command = raw.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        problems.append(("stdio.command", "must be a non-empty list of non-empty strings"))
        return None
    if server_dir is not None:
        command = [a.replace(SERVER_DIR_PLACEHOLDER, str(server_dir)) for a in command]
    env = _string_map(raw.get("env") or {}, "stdio.env", problems)
    pass_env = raw.get("pass_env") or []
    if not isinstance(pass_env, list) or not all(isinstance(n, str) and n for n in pass_env):
        problems.append(("stdio.pass_env", "must be a list of variable names"))
        pass_env = []
    return StdioTransport(command=tuple(command), env=env, pass_env=tuple(pass_env))


def _http(raw: Any, problems: list[Violation]) -> HttpTransport | None:
    if not isinstance(raw, Mapping):
        problems.append(("http", "must be a mapping with `url`"))
        return None
    allowed = {"url", "headers", "headers_from_env"}
    problems.extend((f"http.{k}", "unknown field") for k in raw if k not in allowed)
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        problems.append(("http.url", "must be an http:// or https:// URL"))
        return None
    headers = _string_map(raw.get("headers") or {}, "http.headers", problems)
    from_env = _string_map(raw.get("headers_from_env") or {}, "http.headers_from_env", problems)
    return HttpTransport(url=url, headers=headers, headers_from_env=from_env)


def _env_name_problems(transport: Transport) -> list[Violation]:
    """Variables of the service a registration may never have, whoever registers it (`AF_*`)."""
    if isinstance(transport, StdioTransport):
        named = [(f"stdio.pass_env[{i}]", n) for i, n in enumerate(transport.pass_env)]
    else:
        named = [(f"http.headers_from_env.{h}", n) for h, n in transport.headers_from_env.items()]
    found = [(where, env_problem(name, None)) for where, name in named]
    return [(where, problem) for where, problem in found if problem is not None]


def _retry(raw: Any, problems: list[Violation]) -> RetryPolicy:
    if not isinstance(raw, Mapping):
        problems.append(("retry", "must be a mapping"))
        return RetryPolicy()
    default = RetryPolicy()
    attempts = _number(
        raw, "max_attempts", default.max_attempts, 1, 10, problems, prefix="retry.", integer=True
    )
    initial = _number(
        raw, "initial_backoff_seconds", default.initial_backoff_seconds, 0, 60, problems, "retry."
    )
    cap = _number(raw, "max_backoff_seconds", default.max_backoff_seconds, 0, 300, problems, "retry.")
    multiplier = _number(raw, "multiplier", default.multiplier, 1, 10, problems, "retry.")
    return RetryPolicy(int(attempts), initial, cap, multiplier)


def _breaker(raw: Any, problems: list[Violation]) -> BreakerConfig:
    if not isinstance(raw, Mapping):
        problems.append(("circuit_breaker", "must be a mapping"))
        return BreakerConfig()
    default = BreakerConfig()
    p = "circuit_breaker."
    threshold = _number(
        raw, "failure_threshold", default.failure_threshold, 1, 1000, problems, p, integer=True
    )
    open_seconds = _number(raw, "open_seconds", default.open_seconds, 0, 3600, problems, p)
    return BreakerConfig(failure_threshold=int(threshold), open_seconds=open_seconds)


def _access(raw: Any, problems: list[Violation]) -> ToolAccess:
    if not isinstance(raw, Mapping):
        problems.append(("access", "must be a mapping with `roles` and `tenants`"))
        return ToolAccess()
    roles = raw.get("roles") or []
    tenants = raw.get("tenants") or []
    if not isinstance(roles, list) or any(r not in ROLES for r in roles):
        problems.append(("access.roles", f"must list roles among {sorted(ROLES)}"))
        roles = []
    if not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants):
        problems.append(("access.tenants", "must be a list of tenant names (or `*`)"))
        tenants = []
    return ToolAccess(roles=tuple(roles), tenants=tuple(tenants))


def _string_map(raw: Any, field: str, problems: list[Violation]) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        problems.append((field, "must map names to strings"))
        return {}
    return dict(raw)


def _number(
    raw: Mapping[str, Any],
    key: str,
    default: float,
    low: float,
    high: float,
    problems: list[Violation],
    prefix: str = "",
    *,
    integer: bool = False,
) -> float:
    """`raw[key]` within [low, high]; missing or zero means `default`."""
    value = raw.get(key)
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
        problems.append((prefix + key, "must be an integer" if integer else "must be a number"))
        return default
    if not low <= value <= high:
        problems.append((prefix + key, f"must be from {low:g} to {high:g}"))
        return default
    return float(value)

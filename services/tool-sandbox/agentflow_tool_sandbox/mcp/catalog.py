"""Loads catalog MCP servers: one YAML file per server in `catalog/mcp/`, checked before anything is
served."""

from __future__ import annotations

from pathlib import Path

import yaml

from agentflow_tool_sandbox.catalog import CatalogError
from agentflow_tool_sandbox.mcp.model import ServerSpec
from agentflow_tool_sandbox.mcp.parse import parse_server
from agentflow_tool_sandbox.spec import ORIGIN_CATALOG
from agentflow_tool_sandbox.validation import Violation


def load_servers(directory: Path) -> list[ServerSpec]:
    """Every server in `directory/*.yaml` (none when it does not exist), in id order.

    Raises CatalogError listing every problem of every file, duplicates included. `{server_dir}` in a
    stdio command is the file's directory.
    """
    servers: list[ServerSpec] = []
    problems: list[Violation] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problems.append((path.name, f"cannot read: {exc}"))
            continue
        spec, found = parse_server(document, server_dir=path.parent.resolve(), origin=ORIGIN_CATALOG)
        problems.extend((f"{path.name}:{f}", d) for f, d in found)
        if spec is None:
            continue
        if spec.server_id in seen:
            problems.append((f"{path.name}:id", f"duplicate of the server in {seen[spec.server_id]}"))
            continue
        seen[spec.server_id] = path.name
        servers.append(spec)
    if problems:
        raise CatalogError(problems)
    return sorted(servers, key=lambda s: s.server_id)

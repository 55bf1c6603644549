"""Names of MCP servers and of the tools imported from them.

An imported tool's id is `{server}--{tool}`: the server id (which never holds `--`), two dashes, and the
remote name made into an id (lowercase; anything but letters and digits becomes one dash). Native tool ids
may not hold `--`, so imported and native tools never collide, and tools of one server keep their ids when
another server is added. A remote name that does not map cleanly onto the id rules (too long, or colliding
with another tool of the same server) gets a short hash of the remote name appended. Ids already given are
kept across re-imports.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

SERVER_ID = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
"""`mcpServers/{id}`: a lowercase letter, then letters or digits, single dashes between; see MAX_SERVER_ID."""

MAX_SERVER_ID = 30
SEPARATOR = "--"
MAX_TOOL_ID = 63
_HASH_LEN = 6


def valid_server_id(server_id: str) -> bool:
    """Whether `server_id` is a valid MCP server id."""
    return len(server_id) <= MAX_SERVER_ID and SERVER_ID.fullmatch(server_id) is not None


def server_id_from_name(name: str) -> str | None:
    """The id in `mcpServers/{id}`, None when `name` is not one."""
    prefix, _, server_id = name.partition("/")
    return server_id if prefix == "mcpServers" and valid_server_id(server_id) else None


def is_imported(tool_id: str) -> bool:
    """Whether a tool id names an imported tool (it holds the separator)."""
    return SEPARATOR in tool_id


def _slug(remote_name: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", remote_name.lower())).strip("-")


def _hashed(server_id: str, remote_name: str, slug: str) -> str:
    digest = hashlib.sha256(remote_name.encode()).hexdigest()[:_HASH_LEN]
    room = MAX_TOOL_ID - len(server_id) - len(SEPARATOR) - _HASH_LEN - 1
    stem = slug[:room].strip("-")
    return f"{server_id}{SEPARATOR}{stem}-{digest}" if stem else f"{server_id}{SEPARATOR}t{digest}"


def assign_tool_ids(server_id: str, remote_names: Iterable[str], known: Mapping[str, str]) -> dict[str, str]:
    """Tool ids for a server's remote tool names: `known` ids (remote name → id) are kept, new names get
    `{server}--{slug}`, or the hashed form when that is too long or already taken."""
    names = sorted(set(remote_names))
    assigned = {name: known[name] for name in names if name in known}
    taken = set(assigned.values())
    for name in names:
        if name in assigned:
            continue
        slug = _slug(name)
        tool_id = f"{server_id}{SEPARATOR}{slug}"
        if not slug or len(tool_id) > MAX_TOOL_ID or tool_id in taken or not slug[0].isalnum():
            tool_id = _hashed(server_id, name, slug)
        assigned[name] = tool_id
        taken.add(tool_id)
    return assigned

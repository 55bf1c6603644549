"""Resource names and input rules of the memory API."""

from __future__ import annotations

from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.names import MEMORY_ID

PREFIX = "memories/"


def memory_id_from_name(name: str, field: str = "name") -> str:
    """The id in `memories/{id}`; InvalidArgument (with a field violation on `field`) otherwise."""
    if not name:
        raise InvalidArgument(f"{field} is required", violations=[(field, "required")])
    memory_id = name.removeprefix(PREFIX)
    if not name.startswith(PREFIX) or not MEMORY_ID.fullmatch(memory_id):
        raise InvalidArgument(
            f"{field} must look like memories/{{id}}",
            violations=[(field, "must be memories/{id} with id matching [a-z0-9][a-z0-9._-]{0,127}")],
        )
    return memory_id

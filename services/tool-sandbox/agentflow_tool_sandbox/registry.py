"""The tool registry: catalog tools (global, read-only) over API-registered tools (per tenant)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from agentflow_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

from agentflow_tool_sandbox.spec import ORIGIN_API, ToolSpec
from agentflow_tool_sandbox.store import ToolStore
from agentflow_tool_sandbox.validation import NOTHING_DELEGATED, Delegation, validate_tool

UPDATABLE = ("description", "input_schema", "process", "limits", "profile")
"""Fields of Tool an UpdateTool mask may name (`limits` and `profile` both set the whole profile's caps)."""


class ImportedTools(Protocol):
    """Tools imported from MCP servers (`mcp.servers.McpServers`): their ids hold `--`, native ids never."""

    async def tool(self, tenant: str, tool_id: str) -> ToolSpec | None: ...

    async def tools(self, tenant: str) -> list[ToolSpec]: ...


class Registry:
    """Finds, lists, registers and removes tools; catalog tools win over a tenant's tool of the same id."""

    def __init__(
        self,
        store: ToolStore,
        catalog: Sequence[ToolSpec],
        *,
        loaded: datetime | None = None,
        imported: ImportedTools | None = None,
        delegation: Delegation = NOTHING_DELEGATED,
    ) -> None:
        loaded = loaded or datetime.now(UTC)
        self.delegation = delegation
        self.store = store
        self.imported = imported
        self.catalog = {t.tool_id: replace(t, create_time=t.create_time or loaded) for t in catalog}
        self._catalog_sorted = sorted(self.catalog.values(), key=lambda t: t.tool_id)

    async def create(self, tenant: str, tool: ToolSpec, *, limits_field: str = "profile") -> ToolSpec:
        """Register `tool` for `tenant`; InvalidArgument lists every problem, AlreadyExists on a taken id."""
        problems = validate_tool(tool, prefix="tool.", delegation=self.delegation, limits_field=limits_field)
        if problems:
            raise InvalidArgument("the tool is not valid", violations=problems)
        if tool.tool_id in self.catalog:
            raise AlreadyExists(
                f"tools/{tool.tool_id} is a catalog tool",
                reason="TOOL_EXISTS",
                metadata={"tool": tool.tool_id, "origin": "catalog"},
            )
        stored = replace(tool, origin=ORIGIN_API, create_time=datetime.now(UTC))
        if not await self.store.insert(tenant, stored):
            raise AlreadyExists(
                f"tools/{tool.tool_id} already exists", reason="TOOL_EXISTS", metadata={"tool": tool.tool_id}
            )
        return stored

    async def update(
        self, tenant: str, changed: ToolSpec, mask: Sequence[str], *, limits_field: str = "profile"
    ) -> ToolSpec:
        """Replace the `mask` fields (all updatable ones when empty) of an API-registered tool with those of
        `changed`; the result is validated like a new tool. Catalog and imported tools cannot change."""
        unknown = [path for path in mask if path not in UPDATABLE]
        if unknown:
            raise InvalidArgument(
                "update_mask names fields that cannot be updated",
                violations=[("update_mask", f"{p!r} is not one of {', '.join(UPDATABLE)}") for p in unknown],
            )
        tool_id = changed.tool_id
        if tool_id in self.catalog or "--" in tool_id:
            raise FailedPrecondition(
                f"tools/{tool_id} is not registered through the API and cannot be changed",
                reason="CATALOG_TOOL",
                metadata={"tool": tool_id},
            )
        current = await self.store.get(tenant, tool_id)
        if current is None:
            raise NotFound(f"tools/{tool_id} not found", reason="TOOL_NOT_FOUND", metadata={"tool": tool_id})
        fields = set(mask or UPDATABLE)
        updated = replace(
            current,
            description=changed.description if "description" in fields else current.description,
            input_schema=changed.input_schema if "input_schema" in fields else current.input_schema,
            process=changed.process if "process" in fields else current.process,
            limits=changed.limits if fields & {"limits", "profile"} else current.limits,
            permissions=changed.permissions if "profile" in fields else current.permissions,
        )
        problems = validate_tool(
            updated, prefix="tool.", delegation=self.delegation, limits_field=limits_field
        )
        if problems:
            raise InvalidArgument("the updated tool is not valid", violations=problems)
        if not await self.store.replace(tenant, updated):
            raise NotFound(f"tools/{tool_id} not found", reason="TOOL_NOT_FOUND", metadata={"tool": tool_id})
        return updated

    async def get(self, tenant: str, tool_id: str) -> ToolSpec:
        """The tool `tool_id` as `tenant` sees it; NotFound otherwise."""
        if "--" in tool_id and self.imported is not None:
            tool = await self.imported.tool(tenant, tool_id)
        else:
            tool = self.catalog.get(tool_id) or await self.store.get(tenant, tool_id)
        if tool is None:
            raise NotFound(f"tools/{tool_id} not found", reason="TOOL_NOT_FOUND", metadata={"tool": tool_id})
        return tool

    async def list(self, tenant: str, offset: int, page_size: int) -> tuple[list[ToolSpec], int | None]:
        """One page of the tools `tenant` sees, in name order, and the offset of the next page (if any)."""
        end = offset + page_size
        registered = await self.store.first(tenant, end + 1)
        imported = await self.imported.tools(tenant) if self.imported is not None else []
        merged = sorted(
            [*self._catalog_sorted, *(t for t in registered if t.tool_id not in self.catalog), *imported],
            key=lambda t: t.tool_id,
        )
        return merged[offset:end], (end if len(merged) > end else None)

    async def delete(self, tenant: str, tool_id: str) -> None:
        """Remove a tool registered through the API; catalog and imported tools cannot be removed."""
        if tool_id in self.catalog or "--" in tool_id:
            raise FailedPrecondition(
                f"tools/{tool_id} comes from the catalog and cannot be deleted",
                reason="CATALOG_TOOL",
                metadata={"tool": tool_id},
            )
        if not await self.store.delete(tenant, tool_id):
            raise NotFound(f"tools/{tool_id} not found", reason="TOOL_NOT_FOUND", metadata={"tool": tool_id})

"""SQL storage of MCP registrations (per tenant) and of the tools imported from every server.

Catalog servers are not stored (the catalog is loaded at start), but their imported tools are, under
tenant "" (seen by every tenant), so their ids stay stable across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentflow_runtime.db import UtcDateTime
from sqlalchemy import JSON, Column, MetaData, String, Table, Text, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()

mcp_servers = Table(
    "mcp_servers",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("server_id", String(30), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)

mcp_tools = Table(
    "mcp_tools",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("tool_id", String(63), primary_key=True),
    Column("server_id", String(30), nullable=False, index=True),
    Column("remote_name", String(256), nullable=False),
    Column("description", Text, nullable=False),
    Column("input_schema", JSON, nullable=False),
    Column("sync_time", UtcDateTime(), nullable=False),
)


@dataclass(frozen=True)
class StoredServer:
    """An API registration as stored: its document (the registration's fields) and creation time."""

    tenant: str
    server_id: str
    document: dict[str, Any]
    create_time: datetime


@dataclass(frozen=True)
class ImportedTool:
    """A tool imported from a server (`tenant` "" for a catalog server's)."""

    tenant: str
    tool_id: str
    server_id: str
    remote_name: str
    description: str
    input_schema: dict[str, Any]
    sync_time: datetime


class McpStore:
    """Registrations and imported tools."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert_server(self, server: StoredServer) -> bool:
        """Store a registration; False when the tenant already has that id."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(mcp_servers).values(**server.__dict__))
        except IntegrityError:
            return False
        return True

    async def servers(self, tenant: str | None = None) -> list[StoredServer]:
        """A tenant's registrations (every tenant's with None), in id order."""
        query = select(mcp_servers).order_by(mcp_servers.c.tenant, mcp_servers.c.server_id)
        if tenant is not None:
            query = query.where(mcp_servers.c.tenant == tenant)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [StoredServer(r.tenant, r.server_id, dict(r.document), r.create_time) for r in rows]

    async def server(self, tenant: str, server_id: str) -> StoredServer | None:
        """One registration, if any."""
        query = select(mcp_servers).where(
            mcp_servers.c.tenant == tenant, mcp_servers.c.server_id == server_id
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (
            None
            if row is None
            else StoredServer(row.tenant, row.server_id, dict(row.document), row.create_time)
        )

    async def delete_server(self, tenant: str, server_id: str) -> bool:
        """Remove a registration and its imported tools; False when there was none."""
        async with self.engine.begin() as conn:
            deleted = await conn.execute(
                delete(mcp_servers).where(
                    mcp_servers.c.tenant == tenant, mcp_servers.c.server_id == server_id
                )
            )
            await conn.execute(
                delete(mcp_tools).where(mcp_tools.c.tenant == tenant, mcp_tools.c.server_id == server_id)
            )
        return bool(deleted.rowcount)

    async def tools(self, tenant: str, server_id: str) -> list[ImportedTool]:
        """The tools imported from one server, in id order."""
        query = (
            select(mcp_tools)
            .where(mcp_tools.c.tenant == tenant, mcp_tools.c.server_id == server_id)
            .order_by(mcp_tools.c.tool_id)
        )
        async with self.engine.connect() as conn:
            return [_imported(r) for r in (await conn.execute(query)).all()]

    async def visible_tools(self, tenant: str) -> list[ImportedTool]:
        """Every imported tool `tenant` sees (its own servers' and the catalog servers'), in id order."""
        query = (
            select(mcp_tools)
            .where(or_(mcp_tools.c.tenant == tenant, mcp_tools.c.tenant == ""))
            .order_by(mcp_tools.c.tool_id)
        )
        async with self.engine.connect() as conn:
            return [_imported(r) for r in (await conn.execute(query)).all()]

    async def tool(self, tenant: str, tool_id: str) -> ImportedTool | None:
        """An imported tool `tenant` sees: a catalog server's first, then the tenant's own."""
        query = select(mcp_tools).where(
            or_(mcp_tools.c.tenant == tenant, mcp_tools.c.tenant == ""), mcp_tools.c.tool_id == tool_id
        )
        async with self.engine.connect() as conn:
            rows = sorted((await conn.execute(query)).all(), key=lambda r: r.tenant != "")
        return _imported(rows[0]) if rows else None

    async def replace_tools(self, tenant: str, server_id: str, imported: list[ImportedTool]) -> None:
        """Make `imported` the server's whole tool list (one transaction)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    delete(mcp_tools).where(mcp_tools.c.tenant == tenant, mcp_tools.c.server_id == server_id)
                )
                if imported:
                    await conn.execute(insert(mcp_tools), [t.__dict__ for t in imported])
        except IntegrityError:
            pass  # another sandbox instance imported the same list at the same moment


def _imported(row: Any) -> ImportedTool:
    return ImportedTool(
        tenant=row.tenant,
        tool_id=row.tool_id,
        server_id=row.server_id,
        remote_name=row.remote_name,
        description=row.description,
        input_schema=dict(row.input_schema),
        sync_time=row.sync_time,
    )


def now() -> datetime:
    """The current time, for sync and creation stamps."""
    return datetime.now(UTC)

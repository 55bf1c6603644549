"""SQL storage of tool-sandbox: API-registered tools (per tenant) and execution records (idempotency)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentflow_runtime.db import UtcDateTime
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentflow_tool_sandbox.events import Result, Usage
from agentflow_tool_sandbox.spec import ORIGIN_API, EgressRule, Limits, Permissions, ProcessSpec, ToolSpec

metadata = MetaData()

tools = Table(
    "tools",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("tool_id", String(63), primary_key=True),
    Column("description", Text, nullable=False),
    Column("input_schema", JSON, nullable=False),
    Column("command", JSON, nullable=False),
    Column("env", JSON, nullable=False),
    Column("wall_time_seconds", Float, nullable=False),
    Column("cpu_seconds", BigInteger, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("output_bytes", BigInteger, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)

tool_profiles = Table(
    "tool_profiles",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("tool_id", String(63), primary_key=True),
    Column("profile", JSON, nullable=False),
)
"""The rest of an API-registered tool's execution profile (grants, process cap): a table of its own, so
existing `tools` tables need no migration. Written and removed with the tool's row; a tool without one has
the deny-everything profile."""

executions = Table(
    "executions",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("idempotency_key", String(256), primary_key=True),
    Column("tool_id", String(63), nullable=False),
    Column("args_digest", String(64), nullable=False),
    Column("result", JSON, nullable=False),
    Column("stdout", LargeBinary, nullable=False),
    Column("stderr", LargeBinary, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)

running_executions = Table(
    "running_executions",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("idempotency_key", String(256), primary_key=True),
    Column("tool_id", String(63), nullable=False),
    Column("args_digest", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("heartbeat", UtcDateTime(), nullable=False),
)
"""In-progress markers of keyed executions (a table of its own, so existing `executions` tables need no
migration). Written before the process starts, refreshed by the owning sandbox instance while it runs,
deleted in the transaction that records the finished execution."""

RUNNING = "RUNNING"
CANCELLING = "CANCELLING"


class ToolStore:
    """Tools registered through the API, each visible to its tenant only."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, tenant: str, tool: ToolSpec) -> bool:
        """Store a new tool; False when the tenant already has one with that id."""
        row = {
            "tenant": tenant,
            "tool_id": tool.tool_id,
            **_tool_values(tool),
            "create_time": tool.create_time or datetime.now(UTC),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(tools).values(**row))
                await conn.execute(insert(tool_profiles).values(**_profile_row(tenant, tool)))
        except IntegrityError:
            return False
        return True

    async def replace(self, tenant: str, tool: ToolSpec) -> bool:
        """Overwrite the tenant's tool `tool.tool_id` (its create time stays); False when there is none."""
        where = and_(tools.c.tenant == tenant, tools.c.tool_id == tool.tool_id)
        values = _tool_values(tool)
        async with self.engine.begin() as conn:
            if not (await conn.execute(update(tools).where(where).values(**values))).rowcount:
                return False
            profile_where = and_(tool_profiles.c.tenant == tenant, tool_profiles.c.tool_id == tool.tool_id)
            await conn.execute(delete(tool_profiles).where(profile_where))
            await conn.execute(insert(tool_profiles).values(**_profile_row(tenant, tool)))
        return True

    async def get(self, tenant: str, tool_id: str) -> ToolSpec | None:
        """The tenant's tool `tool_id`, if any."""
        query = _with_profiles().where(and_(tools.c.tenant == tenant, tools.c.tool_id == tool_id))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _tool(row)

    async def first(self, tenant: str, limit: int) -> list[ToolSpec]:
        """The tenant's first `limit` tools in id order."""
        query = _with_profiles().where(tools.c.tenant == tenant).order_by(tools.c.tool_id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_tool(row) for row in rows]

    async def delete(self, tenant: str, tool_id: str) -> bool:
        """Remove the tenant's tool; False when there was none."""
        query = delete(tools).where(and_(tools.c.tenant == tenant, tools.c.tool_id == tool_id))
        profile = delete(tool_profiles).where(
            and_(tool_profiles.c.tenant == tenant, tool_profiles.c.tool_id == tool_id)
        )
        async with self.engine.begin() as conn:
            deleted = (await conn.execute(query)).rowcount
            await conn.execute(profile)
        return bool(deleted)


@dataclass(frozen=True)
class ExecutionRecord:
    """A finished execution, kept so a repeated idempotency key gets the same answer."""

    tenant: str
    idempotency_key: str
    tool_id: str
    args_digest: str
    result: Result
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class Marker:
    """A keyed execution in progress: who runs it (a sandbox instance id) and when it last said so."""

    tenant: str
    idempotency_key: str
    tool_id: str
    args_digest: str
    state: str
    owner: str
    heartbeat: datetime


class ExecutionStore:
    """Execution records by (tenant, idempotency key), and the markers of keyed executions in progress."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, tenant: str, key: str) -> ExecutionRecord | None:
        """The record of an earlier execution with this key, if any."""
        query = select(executions).where(
            and_(executions.c.tenant == tenant, executions.c.idempotency_key == key)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return ExecutionRecord(
            tenant=row.tenant,
            idempotency_key=row.idempotency_key,
            tool_id=row.tool_id,
            args_digest=row.args_digest,
            result=result_from_json(row.result),
            stdout=row.stdout,
            stderr=row.stderr,
        )

    async def put(self, record: ExecutionRecord) -> bool:
        """Record an execution; False when the key was recorded meanwhile (the first record stays)."""
        row = {
            "tenant": record.tenant,
            "idempotency_key": record.idempotency_key,
            "tool_id": record.tool_id,
            "args_digest": record.args_digest,
            "result": result_to_json(record.result),
            "stdout": record.stdout,
            "stderr": record.stderr,
            "create_time": datetime.now(UTC),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(executions).values(**row))
        except IntegrityError:
            return False
        return True

    async def finish(self, record: ExecutionRecord, owner: str | None) -> bool:
        """Record a finished execution and drop its marker (`owner`'s, or anyone's when None) at once.

        False when the key was recorded meanwhile (the first record stays; the marker goes either way).
        """
        drop = delete(running_executions).where(
            running_executions.c.tenant == record.tenant,
            running_executions.c.idempotency_key == record.idempotency_key,
        )
        if owner is not None:
            drop = drop.where(running_executions.c.owner == owner)
        recorded = await self.put(record)
        async with self.engine.begin() as conn:
            await conn.execute(drop)
        return recorded

    async def finish_marker(self, tenant: str, key: str, owner: str) -> None:
        """Drop the owner's marker without recording anything."""
        query = delete(running_executions).where(
            running_executions.c.tenant == tenant,
            running_executions.c.idempotency_key == key,
            running_executions.c.owner == owner,
        )
        async with self.engine.begin() as conn:
            await conn.execute(query)

    async def marker(self, tenant: str, key: str) -> Marker | None:
        """The in-progress marker of a key, if any."""
        query = select(running_executions).where(
            running_executions.c.tenant == tenant, running_executions.c.idempotency_key == key
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Marker(
            row.tenant, row.idempotency_key, row.tool_id, row.args_digest, row.state, row.owner, row.heartbeat
        )

    async def claim(self, marker: Marker) -> bool:
        """Insert a marker before starting the process; False when another caller claimed the key first."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(running_executions).values(**marker.__dict__))
        except IntegrityError:
            return False
        return True

    async def take_over(self, tenant: str, key: str, owner: str, stale_before: datetime) -> bool:
        """Become the owner of a marker whose owner stopped heartbeating (one conditional UPDATE)."""
        query = (
            update(running_executions)
            .where(
                running_executions.c.tenant == tenant,
                running_executions.c.idempotency_key == key,
                running_executions.c.state == RUNNING,
                running_executions.c.heartbeat < stale_before,
            )
            .values(owner=owner, heartbeat=datetime.now(UTC))
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(query)).rowcount == 1)

    async def beat(self, tenant: str, key: str, owner: str) -> str | None:
        """Refresh the owner's heartbeat; the marker's state (CANCELLING asks the owner to kill), or None
        when the marker is no longer this owner's."""
        query = (
            update(running_executions)
            .where(
                running_executions.c.tenant == tenant,
                running_executions.c.idempotency_key == key,
                running_executions.c.owner == owner,
            )
            .values(heartbeat=datetime.now(UTC))
            .returning(running_executions.c.state)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else str(row.state)

    async def request_cancel(self, tenant: str, key: str) -> bool:
        """Ask the owner of a running key (maybe another sandbox instance) to kill it at its next beat."""
        query = (
            update(running_executions)
            .where(running_executions.c.tenant == tenant, running_executions.c.idempotency_key == key)
            .values(state=CANCELLING)
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(query)).rowcount == 1)


def result_to_json(result: Result) -> dict[str, Any]:
    """A result as a JSON document (output kept as the JSON value or text it was)."""
    return {
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "truncated": result.truncated,
        "output": result.output,
        "stderr": result.stderr,
        "usage": {
            "cpu_seconds": result.usage.cpu_seconds,
            "max_rss_bytes": result.usage.max_rss_bytes,
            "wall_seconds": result.usage.wall_seconds,
        },
        "cancelled": result.cancelled,
    }


def result_from_json(data: dict[str, Any]) -> Result:
    """The result `result_to_json` wrote."""
    usage = data.get("usage") or {}
    return Result(
        exit_code=int(data["exit_code"]),
        timed_out=bool(data.get("timed_out")),
        truncated=bool(data.get("truncated")),
        output=data.get("output"),
        stderr=str(data.get("stderr", "")),
        cancelled=bool(data.get("cancelled")),
        usage=Usage(
            cpu_seconds=float(usage.get("cpu_seconds", 0.0)),
            max_rss_bytes=int(usage.get("max_rss_bytes", 0)),
            wall_seconds=float(usage.get("wall_seconds", 0.0)),
        ),
    )


def _with_profiles() -> Any:
    """Tools with their profile rows (absent for a tool stored before profiles existed)."""
    joined = tools.outerjoin(
        tool_profiles,
        and_(tool_profiles.c.tenant == tools.c.tenant, tool_profiles.c.tool_id == tools.c.tool_id),
    )
    return select(tools, tool_profiles.c.profile).select_from(joined)


def _tool_values(tool: ToolSpec) -> dict[str, Any]:
    """The `tools` columns a registration sets and a replacement overwrites."""
    return {
        "description": tool.description,
        "input_schema": dict(tool.input_schema),
        "command": list(tool.process.command),
        "env": dict(tool.process.env),
        "wall_time_seconds": tool.limits.wall_time_seconds,
        "cpu_seconds": tool.limits.cpu_seconds,
        "memory_bytes": tool.limits.memory_bytes,
        "output_bytes": tool.limits.output_bytes,
    }


def _profile_row(tenant: str, tool: ToolSpec) -> dict[str, Any]:
    permissions = tool.permissions
    profile = {
        "egress": [{"host": r.host, "port": r.port} for r in permissions.egress],
        "read_only_paths": list(permissions.read_only_paths),
        "writable_paths": list(permissions.writable_paths),
        "env": list(permissions.env),
        "max_processes": tool.limits.max_processes,
    }
    return {"tenant": tenant, "tool_id": tool.tool_id, "profile": profile}


def _tool(row: Row[Any]) -> ToolSpec:
    created: datetime = row.create_time
    profile: dict[str, Any] = row.profile or {}
    return ToolSpec(
        tool_id=row.tool_id,
        description=row.description,
        input_schema=row.input_schema,
        process=ProcessSpec(command=tuple(row.command), env=dict(row.env)),
        limits=Limits(
            wall_time_seconds=row.wall_time_seconds,
            cpu_seconds=row.cpu_seconds,
            memory_bytes=row.memory_bytes,
            output_bytes=row.output_bytes,
            max_processes=int(profile.get("max_processes", 0)),
        ),
        permissions=Permissions(
            egress=tuple(EgressRule(str(r["host"]), int(r["port"])) for r in profile.get("egress", [])),
            read_only_paths=tuple(profile.get("read_only_paths", [])),
            writable_paths=tuple(profile.get("writable_paths", [])),
            env=tuple(profile.get("env", [])),
        ),
        origin=ORIGIN_API,
        create_time=created,
    )

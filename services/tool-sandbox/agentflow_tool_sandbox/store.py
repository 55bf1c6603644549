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
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentflow_tool_sandbox.events import Result, Usage
from agentflow_tool_sandbox.spec import ORIGIN_API, Limits, ProcessSpec, ToolSpec

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


class ToolStore:
    """Tools registered through the API, each visible to its tenant only."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, tenant: str, tool: ToolSpec) -> bool:
        """Store a new tool; False when the tenant already has one with that id."""
        row = {
            "tenant": tenant,
            "tool_id": tool.tool_id,
            "description": tool.description,
            "input_schema": dict(tool.input_schema),
            "command": list(tool.process.command),
            "env": dict(tool.process.env),
            "wall_time_seconds": tool.limits.wall_time_seconds,
            "cpu_seconds": tool.limits.cpu_seconds,
            "memory_bytes": tool.limits.memory_bytes,
            "output_bytes": tool.limits.output_bytes,
            "create_time": tool.create_time or datetime.now(UTC),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(tools).values(**row))
        except IntegrityError:
            return False
        return True

    async def get(self, tenant: str, tool_id: str) -> ToolSpec | None:
        """The tenant's tool `tool_id`, if any."""
        query = select(tools).where(and_(tools.c.tenant == tenant, tools.c.tool_id == tool_id))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _tool(row)

    async def first(self, tenant: str, limit: int) -> list[ToolSpec]:
        """The tenant's first `limit` tools in id order."""
        query = select(tools).where(tools.c.tenant == tenant).order_by(tools.c.tool_id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_tool(row) for row in rows]

    async def delete(self, tenant: str, tool_id: str) -> bool:
        """Remove the tenant's tool; False when there was none."""
        query = delete(tools).where(and_(tools.c.tenant == tenant, tools.c.tool_id == tool_id))
        async with self.engine.begin() as conn:
            deleted = (await conn.execute(query)).rowcount
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


class ExecutionStore:
    """Execution records by (tenant, idempotency key)."""

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
        usage=Usage(
            cpu_seconds=float(usage.get("cpu_seconds", 0.0)),
            max_rss_bytes=int(usage.get("max_rss_bytes", 0)),
            wall_seconds=float(usage.get("wall_seconds", 0.0)),
        ),
    )


def _tool(row: Row[Any]) -> ToolSpec:
    created: datetime = row.create_time
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
        ),
        origin=ORIGIN_API,
        create_time=created,
    )

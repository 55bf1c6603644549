"""The planner's tables: versioned workflow definitions with their compiled plans, scoped by tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentflow_runtime.db import UtcDateTime
from agentflow_runtime.errors import Aborted, AlreadyExists, NotFound
from agentflow_runtime.protojson import utcnow
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "StoredWorkflow",
    "add_version",
    "create_workflow",
    "get_workflow",
    "list_workflows",
    "metadata",
    "workflows",
]

metadata = MetaData()

workflows = Table(
    "workflows",
    metadata,
    Column("tenant", String(128), nullable=False),
    Column("workflow_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("definition", JSON, nullable=False),
    Column("plan", JSON, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant", "workflow_id", "version"),
)


@dataclass(frozen=True)
class StoredWorkflow:
    """One stored version of a workflow."""

    tenant: str
    workflow_id: str
    version: int
    display_name: str
    description: str
    definition: dict[str, Any]
    plan: dict[str, Any]
    plan_hash: str
    create_time: datetime
    update_time: datetime


def _row(row: Any) -> StoredWorkflow:
    return StoredWorkflow(
        tenant=row.tenant,
        workflow_id=row.workflow_id,
        version=row.version,
        display_name=row.display_name,
        description=row.description,
        definition=row.definition,
        plan=row.plan,
        plan_hash=row.plan_hash,
        create_time=row.create_time,
        update_time=row.update_time,
    )


async def create_workflow(
    conn: AsyncConnection,
    *,
    tenant: str,
    workflow_id: str,
    display_name: str,
    description: str,
    definition: dict[str, Any],
    plan: dict[str, Any],
    plan_hash: str,
) -> StoredWorkflow:
    """Stores version 1 of a new workflow; AlreadyExists when the tenant already has that id."""
    exists = await conn.scalar(
        select(func.count())
        .select_from(workflows)
        .where(workflows.c.tenant == tenant, workflows.c.workflow_id == workflow_id)
    )
    if exists:
        raise AlreadyExists(
            f"workflow {workflow_id!r} already exists", metadata={"workflow": f"workflows/{workflow_id}"}
        )
    now = utcnow()
    record = StoredWorkflow(
        tenant, workflow_id, 1, display_name, description, definition, plan, plan_hash, now, now
    )
    try:
        await conn.execute(workflows.insert().values(**record.__dict__))
    except IntegrityError as exc:
        raise AlreadyExists(f"workflow {workflow_id!r} already exists") from exc
    return record


async def add_version(
    conn: AsyncConnection,
    current: StoredWorkflow,
    *,
    display_name: str,
    description: str,
    definition: dict[str, Any],
    plan: dict[str, Any],
    plan_hash: str,
) -> StoredWorkflow:
    """Stores the version after `current` (which must still be the latest); Aborted when another update
    stored it first (the caller may read the new latest and retry)."""
    record = StoredWorkflow(
        current.tenant,
        current.workflow_id,
        current.version + 1,
        display_name,
        description,
        definition,
        plan,
        plan_hash,
        current.create_time,
        utcnow(),
    )
    try:
        await conn.execute(workflows.insert().values(**record.__dict__))
    except IntegrityError as exc:
        raise Aborted(
            f"workflow {current.workflow_id!r} was updated concurrently (version {record.version} exists)",
            metadata={"workflow": f"workflows/{current.workflow_id}"},
        ) from exc
    return record


async def get_workflow(
    conn: AsyncConnection, *, tenant: str, workflow_id: str, version: int = 0
) -> StoredWorkflow:
    """A version of a workflow (0: the latest); NotFound when missing."""
    query = select(workflows).where(workflows.c.tenant == tenant, workflows.c.workflow_id == workflow_id)
    if version:
        query = query.where(workflows.c.version == version)
    row = (await conn.execute(query.order_by(workflows.c.version.desc()).limit(1))).first()
    if row is None:
        what = f"workflow {workflow_id!r}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found", metadata={"workflow": f"workflows/{workflow_id}"})
    return _row(row)


async def list_workflows(
    conn: AsyncConnection, *, tenant: str, offset: int, limit: int
) -> tuple[list[StoredWorkflow], bool]:
    """The latest version of each workflow of a tenant, newest first; returns (page, more pages follow)."""
    latest = (
        select(workflows.c.workflow_id, func.max(workflows.c.version).label("version"))
        .where(workflows.c.tenant == tenant)
        .group_by(workflows.c.workflow_id)
        .subquery()
    )
    query = (
        select(workflows)
        .join(
            latest,
            (workflows.c.workflow_id == latest.c.workflow_id) & (workflows.c.version == latest.c.version),
        )
        .where(workflows.c.tenant == tenant)
        .order_by(workflows.c.create_time.desc(), workflows.c.workflow_id.desc())
        .offset(offset)
        .limit(limit + 1)
    )
    rows = [_row(row) for row in (await conn.execute(query)).all()]
    return rows[:limit], len(rows) > limit

"""The worker's tables: runs (with lease), steps (the journal), run events, approval tickets."""

from __future__ import annotations

from agentflow_runtime.db import UtcDateTime
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("workflow", String(256), nullable=False),
    Column("workflow_version", Integer, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("plan", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("input", JSON, nullable=False),
    Column("output", JSON),
    Column("error", JSON),
    Column("labels", JSON, nullable=False),
    Column("budget", JSON),
    Column("request_id", String(128)),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("cancel_reason", Text),
    Column("lease_owner", String(64)),
    Column("lease_expires", UtcDateTime()),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("end_time", UtcDateTime()),
    UniqueConstraint("tenant", "request_id", name="uq_runs_request"),
    Index("ix_runs_tenant_created", "tenant", "create_time"),
    Index("ix_runs_claimable", "state", "lease_expires"),
)

steps = Table(
    "steps",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("step_id", String(128), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("output", JSON),
    Column("error", JSON),
    Column("attempts", Integer, nullable=False, default=0),
    Column("start_time", UtcDateTime()),
    Column("end_time", UtcDateTime()),
)

events = Table(
    "run_events",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("step_id", String(128), nullable=False, default=""),
    Column("run_state", String(16), nullable=False),
    Column("data", JSON, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)

approvals = Table(
    "approvals",
    metadata,
    Column("approval_id", String(64), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("request", JSON, nullable=False),
    Column("decided_by", String(256), nullable=False, default=""),
    Column("comment", Text, nullable=False, default=""),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime()),
    Column("decide_time", UtcDateTime()),
    Column("call_key", String(512), nullable=False),
    Column("rule", String(256), nullable=False, default=""),
    Column("approver_roles", JSON, nullable=False),
    Column("on_expiry", String(16), nullable=False, default="fail"),
    Column("resume_state", String(16), nullable=False, default="PENDING"),
    UniqueConstraint("run_id", "call_key", name="uq_approvals_call"),
    Index("ix_approvals_tenant_created", "tenant", "create_time"),
    Index("ix_approvals_expiring", "state", "expire_time"),
)

"""Audit events as the domain sees them: what a service submits and what the chain holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentflow_runtime.outcomes import OUTCOMES

__all__ = ["OUTCOMES", "AuditRecord", "NewAuditEvent"]


@dataclass(frozen=True)
class NewAuditEvent:
    """An event to append; the chain assigns its sequence number and hashes."""

    event_time: datetime
    actor: str
    tenant: str
    principal: str
    action: str
    resource: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """An entry of the chain."""

    seq: int
    event_time: datetime
    actor: str
    tenant: str
    principal: str
    action: str
    resource: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def name(self) -> str:
        """The resource name, `auditEvents/{seq}`."""
        return f"auditEvents/{self.seq}"

    def as_mapping(self) -> dict[str, Any]:
        """The entry as the plain mapping `agentflow_runtime.hashchain` hashes and verifies."""
        return {
            "seq": self.seq,
            "event_time": self.event_time,
            "actor": self.actor,
            "tenant": self.tenant,
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "outcome": self.outcome,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

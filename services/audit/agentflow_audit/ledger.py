"""The audit log's rules: what may be appended, who may read what, and verification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.hashchain import VerifyResult
from agentflow_runtime.redact import redact

from agentflow_audit.events import OUTCOMES, AuditRecord, NewAuditEvent
from agentflow_audit.store import AuditStore

MAX_BATCH = 1000
"""Most events one append may carry."""

ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Page:
    """One page of a listing; `next_after_seq` is 0 on the last page."""

    events: list[AuditRecord]
    next_after_seq: int


def _checked(index: int, event: NewAuditEvent) -> NewAuditEvent:
    field = f"audit_events[{index}]"
    violations: list[tuple[str, str]] = []
    if not event.action:
        violations.append((f"{field}.action", "required"))
    outcome = event.outcome or "ok"
    if outcome not in OUTCOMES:
        violations.append((f"{field}.outcome", f"must be one of {', '.join(sorted(OUTCOMES))}"))
    if not event.actor:
        violations.append((f"{field}.actor", "the caller has no service identity"))
    if violations:
        raise InvalidArgument("invalid audit event", violations=violations)
    return replace(event, outcome=outcome, details=redact(event.details))


class AuditLog:
    """Appends redacted events to the chain and reads it back within the caller's tenancy."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def append(self, events: Sequence[NewAuditEvent]) -> list[AuditRecord]:
        """Validate, redact secrets from `details`, then append atomically in order."""
        if not events:
            raise InvalidArgument("no events to append", violations=[("audit_events", "required")])
        if len(events) > MAX_BATCH:
            raise InvalidArgument(
                f"at most {MAX_BATCH} events per append", violations=[("audit_events", "too many")]
            )
        prepared = [_checked(i, e) for i, e in enumerate(events)]
        try:
            return await self._store.append(prepared)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"event details cannot be hashed: {exc}", violations=[("audit_events.details", str(exc))]
            ) from exc

    async def list(
        self, *, tenant: str, role: str, resource: str = "", after_seq: int = 0, page_size: int = 100
    ) -> Page:
        """A page of events in seq order: the caller's tenant only, every tenant for an admin."""
        scope = None if role == ADMIN_ROLE else tenant
        events, more = await self._store.list_events(
            tenant=scope, resource=resource or None, after_seq=after_seq, limit=page_size
        )
        return Page(events=events, next_after_seq=events[-1].seq if more and events else 0)

    async def verify(self) -> VerifyResult:
        """Recompute the whole chain; names the first entry that does not match."""
        return await self._store.verify()

from __future__ import annotations

import pytest
from agentflow_audit.ledger import AuditLog
from agentflow_audit.store import AuditStore
from agentflow_runtime.errors import InvalidArgument
from agentflow_runtime.redact import REDACTED

from .conftest import make_event


async def test_append_redacts_secrets_before_hashing(store: AuditStore) -> None:
    log = AuditLog(store)
    [record] = await log.append([make_event(1, details={"headers": {"Authorization": "Bearer s"}, "n": 1})])
    assert record.details == {"headers": {"Authorization": REDACTED}, "n": 1}
    page = await log.list(tenant="acme", role="viewer")
    assert page.events[0].details["headers"]["Authorization"] == REDACTED
    assert (await log.verify()).valid


async def test_append_validates(store: AuditStore) -> None:
    log = AuditLog(store)
    with pytest.raises(InvalidArgument) as caught:
        await log.append([make_event(1, action="", outcome="maybe")])
    fields = [f for f, _ in caught.value.violations]
    assert fields == ["audit_events[0].action", "audit_events[0].outcome"]
    with pytest.raises(InvalidArgument):
        await log.append([])
    with pytest.raises(InvalidArgument):
        await log.append([make_event(1, details={"x": float("inf")})])
    [record] = await log.append([make_event(2, outcome="")])
    assert record.outcome == "ok"


async def test_list_is_scoped_to_tenant_unless_admin(store: AuditStore) -> None:
    log = AuditLog(store)
    await log.append([make_event(i, tenant="acme" if i < 3 else "beta") for i in range(1, 6)])
    page = await log.list(tenant="beta", role="developer", page_size=2)
    assert [e.seq for e in page.events] == [3, 4]
    assert page.next_after_seq == 4
    page = await log.list(tenant="beta", role="developer", after_seq=4, page_size=2)
    assert [e.seq for e in page.events] == [5] and page.next_after_seq == 0
    page = await log.list(tenant="beta", role="admin", page_size=10)
    assert len(page.events) == 5

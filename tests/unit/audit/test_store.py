from __future__ import annotations

import asyncio
from datetime import UTC

from agentflow_audit.store import AuditStore
from agentflow_runtime import hashchain
from sqlalchemy import text

from .conftest import make_event


async def test_append_assigns_seq_and_links_hashes(store: AuditStore) -> None:
    first = await store.append([make_event(1), make_event(2)])
    second = await store.append([make_event(3)])
    assert [r.seq for r in first + second] == [1, 2, 3]
    assert first[0].prev_hash == ""
    assert first[1].prev_hash == first[0].hash
    assert second[0].prev_hash == first[1].hash
    assert second[0].hash == hashchain.chain_hash(first[1].hash, second[0].as_mapping())
    assert await store.head() == (3, second[0].hash)
    assert await store.append([]) == []


async def test_list_filters_and_pages(store: AuditStore) -> None:
    await store.append([make_event(i, tenant="acme" if i % 2 else "beta") for i in range(1, 8)])
    events, more = await store.list_events(tenant="acme", resource=None, after_seq=0, limit=2)
    assert [e.seq for e in events] == [1, 3] and more
    events, more = await store.list_events(tenant="acme", resource=None, after_seq=3, limit=2)
    assert [e.seq for e in events] == [5, 7] and not more
    events, more = await store.list_events(tenant=None, resource="runs/r4", after_seq=0, limit=10)
    assert [e.seq for e in events] == [4] and not more
    everything, _ = await store.list_events(tenant=None, resource=None, after_seq=0, limit=100)
    assert len(everything) == 7
    assert everything[0].event_time.tzinfo is UTC
    assert everything[0].details == {"n": 1, "ratio": 0.5}


async def test_verify_round_trips_stored_rows(store: AuditStore) -> None:
    await store.append(
        [make_event(i, details={"f": 1.0, "s": "é", "l": [1, {"x": None}]}) for i in range(1, 6)]
    )
    result = await store.verify(page_size=2)
    assert result.valid
    assert result.checked == 5
    assert result.head_hash == (await store.head())[1]
    exported = [r.as_mapping() async for r in store.scan()]
    assert hashchain.verify(exported).valid


async def test_tampered_row_is_named(store: AuditStore) -> None:
    await store.append([make_event(i) for i in range(1, 6)])
    async with store._engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET outcome = 'denied' WHERE seq = 3"))
    result = await store.verify(page_size=2)
    assert not result.valid
    assert result.first_invalid_seq == 3
    assert result.checked == 3


async def test_tampered_details_and_deleted_row_are_named(store: AuditStore) -> None:
    await store.append([make_event(i) for i in range(1, 6)])
    async with store._engine.begin() as conn:
        await conn.execute(text("""UPDATE audit_events SET details = '{"n": 99}' WHERE seq = 4"""))
    assert (await store.verify()).first_invalid_seq == 4
    async with store._engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    result = await store.verify()
    assert result.first_invalid_seq == 2
    assert "missing" in result.reason


async def test_truncated_tail_is_named(store: AuditStore) -> None:
    await store.append([make_event(i) for i in range(1, 6)])
    async with store._engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq >= 4"))
    result = await store.verify()
    assert not result.valid
    assert result.first_invalid_seq == 4
    assert "truncated" in result.reason


async def test_concurrent_appends_keep_one_chain(store: AuditStore) -> None:
    async def appender(worker: int) -> None:
        for batch in range(5):
            await store.append([make_event(worker * 100 + batch * 10 + i) for i in range(3)])

    await asyncio.gather(*(appender(w) for w in range(8)))
    result = await store.verify()
    assert result.valid
    assert result.checked == 8 * 5 * 3
    assert (await store.head())[0] == 120


async def test_second_initialize_keeps_the_chain(store: AuditStore) -> None:
    await store.append([make_event(1)])
    await store.initialize()
    assert (await store.head())[0] == 1

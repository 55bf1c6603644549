from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest
from agentflow_memory import store
from agentflow_memory.domain import MemoryBook
from agentflow_memory.embedder import LocalEmbedder
from agentflow_memory.records import MemoryDraft, MemoryRecord
from agentflow_memory.vectors import VectorIndex
from agentflow_runtime.errors import InvalidArgument, NotFound

from .conftest import Book

CATS = "Cats are small furry pets; kittens love to play and cats purr."
TAXES = "Income tax returns are due in April; file your taxes early."


async def test_put_is_idempotent_by_content(env: Book) -> None:
    draft = MemoryDraft("m1", CATS, subject="alice", labels={"kind": "pet"}, metadata={"n": 1})
    first = await env.book.put("acme", draft)
    env.clock.advance(60)
    again = await env.book.put("acme", draft)
    assert again == first
    assert again.update_time == first.create_time
    env.clock.advance(60)
    changed = await env.book.put("acme", MemoryDraft("m1", TAXES, subject="alice"))
    assert changed.create_time == first.create_time
    assert changed.update_time > first.update_time
    assert changed.text == TAXES
    assert (await env.book.get("acme", "m1")) == changed
    assert await env.vectors.count("acme") == 1
    [hit] = await env.book.query("acme", "income taxes", top_k=1)
    assert hit.memory.memory_id == "m1" and hit.score > 0.2


async def test_get_missing_and_other_tenant(env: Book) -> None:
    await env.book.put("acme", MemoryDraft("m1", CATS))
    with pytest.raises(NotFound):
        await env.book.get("acme", "nope")
    with pytest.raises(NotFound):
        await env.book.get("beta", "m1")
    assert await env.book.query("beta", "cats") == []


async def test_query_ranks_by_meaning(env: Book) -> None:
    await env.book.put("acme", MemoryDraft("taxes", TAXES))
    await env.book.put("acme", MemoryDraft("cats", CATS))
    results = await env.book.query("acme", "kittens and cats")
    assert [r.memory.memory_id for r in results] == ["cats", "taxes"]
    assert results[0].score > results[1].score
    assert all(-1.0 <= r.score <= 1.0 for r in results)


async def test_query_filters(env: Book) -> None:
    await env.book.put("acme", MemoryDraft("a", CATS, subject="alice", namespace="n1", labels={"k.ey": "x"}))
    await env.book.put("acme", MemoryDraft("b", CATS, subject="bob", namespace="n1", labels={"k.ey": "y"}))
    await env.book.put("acme", MemoryDraft("c", CATS, subject="bob", namespace="n2"))

    async def ids(subject: str = "", namespace: str = "", labels: dict[str, str] | None = None) -> list[str]:
        results = await env.book.query("acme", "cats", subject=subject, namespace=namespace, labels=labels)
        return sorted(r.memory.memory_id for r in results)

    assert await ids() == ["a", "b", "c"]
    assert await ids(subject="bob") == ["b", "c"]
    assert await ids(namespace="n1") == ["a", "b"]
    assert await ids(labels={"k.ey": "y"}) == ["b"]
    assert await ids(subject="bob", namespace="n2") == ["c"]
    assert await ids(labels={"k.ey": "z"}) == []
    assert len(await env.book.query("acme", "cats", top_k=2)) == 2


async def test_top_k_bounds(env: Book) -> None:
    for i in range(7):
        await env.book.put("acme", MemoryDraft(f"m{i}", f"cat number {i}"))
    assert len(await env.book.query("acme", "cat")) == 5
    assert len(await env.book.query("acme", "cat", top_k=500)) == 7
    with pytest.raises(InvalidArgument):
        await env.book.query("acme", "cat", top_k=-1)
    with pytest.raises(InvalidArgument):
        await env.book.query("acme", "  ")


async def test_erase_by_subject(env: Book) -> None:
    await env.book.put("acme", MemoryDraft("a", CATS, subject="alice"))
    await env.book.put("acme", MemoryDraft("b", TAXES, subject="alice"))
    await env.book.put("acme", MemoryDraft("c", CATS, subject="bob"))
    await env.book.put("beta", MemoryDraft("a", CATS, subject="alice"))
    assert await env.book.erase("acme", "alice") == 2
    assert [r.memory.memory_id for r in await env.book.query("acme", "cats")] == ["c"]
    assert await env.vectors.count("acme") == 1
    assert await env.vectors.count("beta") == 1
    assert await env.book.erase("acme", "alice") == 0
    with pytest.raises(InvalidArgument):
        await env.book.erase("acme", "")


async def test_ttl_expiry(env: Book) -> None:
    await env.book.put("acme", MemoryDraft("short", CATS, ttl_seconds=60))
    kept = await env.book.put("acme", MemoryDraft("kept", CATS + " forever"))
    short = await env.book.get("acme", "short")
    assert short.expire_time is not None and kept.expire_time is None
    env.clock.advance(61)
    with pytest.raises(NotFound):
        await env.book.get("acme", "short")
    assert [r.memory.memory_id for r in await env.book.query("acme", "cats")] == ["kept"]
    assert await env.book.sweep_expired(batch=1) == 1
    assert await env.vectors.count("acme") == 1
    async with env.engine.connect() as conn:
        assert await store.count(conn, "acme") == 1
    again = await env.book.put("acme", MemoryDraft("short", CATS, ttl_seconds=60))
    assert again.create_time == env.clock.now


async def test_put_over_an_expired_memory_starts_afresh(env: Book) -> None:
    await env.book.put("acme", MemoryDraft("m", CATS, ttl_seconds=10))
    env.clock.advance(11)
    renewed = await env.book.put("acme", MemoryDraft("m", CATS, ttl_seconds=10))
    assert renewed.create_time == env.clock.now
    assert (await env.book.get("acme", "m")) == renewed


async def test_put_validates(env: Book) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await env.book.put("acme", MemoryDraft("m", " ", ttl_seconds=-1))
    assert [f for f, _ in caught.value.violations] == ["memory.text", "memory.ttl_seconds"]
    with pytest.raises(InvalidArgument):
        await env.book.put("acme", MemoryDraft("m", "!!! ???"))


class BrokenVectors(VectorIndex):
    async def upsert(self, record: MemoryRecord, vector: Sequence[float]) -> None:
        raise ConnectionError("qdrant is down")


async def test_vector_failure_rolls_the_record_back(env: Book) -> None:
    original = await env.book.put("acme", MemoryDraft("m", CATS))
    broken = MemoryBook(env.engine, BrokenVectors(env.vectors._client), LocalEmbedder(), clock=env.clock)
    with pytest.raises(ConnectionError):
        await broken.put("acme", MemoryDraft("m", TAXES))
    with pytest.raises(ConnectionError):
        await broken.put("acme", MemoryDraft("new", TAXES))
    assert await env.book.get("acme", "m") == original
    with pytest.raises(NotFound):
        await env.book.get("acme", "new")


def test_record_expiry_boundary() -> None:
    moment = datetime(2025, 1, 1)
    record = MemoryRecord("t", "m", "", "", "x", {}, {}, "h", moment, moment, moment)
    assert record.expired(moment)
    assert record.name == "memories/m"

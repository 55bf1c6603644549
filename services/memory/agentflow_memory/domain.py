"""The memory book: idempotent puts, recall by meaning, erasure by subject and expiry.

A memory lives twice: its record in SQL and its vector in Qdrant. Writes change the SQL row inside a
transaction and write the vector before the commit, so a failed vector write rolls the row back. Reads are
driven by SQL: a vector without a live row is never returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agentflow_runtime.errors import InvalidArgument, NotFound
from agentflow_runtime.protojson import utcnow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentflow_memory import store
from agentflow_memory.embedder import Embedder
from agentflow_memory.records import MemoryDraft, MemoryRecord, ScoredMemory

if TYPE_CHECKING:
    from agentflow_memory.vectors import VectorIndex

DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600


def _check_draft(draft: MemoryDraft) -> None:
    violations: list[tuple[str, str]] = []
    if not draft.text.strip():
        violations.append(("memory.text", "required"))
    if draft.ttl_seconds < 0 or draft.ttl_seconds > MAX_TTL_SECONDS:
        violations.append(("memory.ttl_seconds", f"must be between 0 and {MAX_TTL_SECONDS}"))
    if violations:
        raise InvalidArgument("invalid memory", violations=violations)


def _is_zero(vector: list[float]) -> bool:
    return not any(math.isfinite(x) and x != 0.0 for x in vector)


class MemoryBook:
    """Memories of every tenant, over one SQL engine, one vector index and one embedder."""

    def __init__(
        self,
        engine: AsyncEngine,
        vectors: VectorIndex,
        embedder: Embedder,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._vectors = vectors
        self._embedder = embedder
        self._clock = clock

    async def initialize(self) -> None:
        """Create the SQL tables and the vector collection if missing."""
        async with self._engine.begin() as conn:
            await conn.run_sync(store.metadata.create_all)
        await self._vectors.ensure_collection(self._embedder.dimension)

    async def put(self, tenant: str, draft: MemoryDraft) -> MemoryRecord:
        """Create or replace a memory; the same content again changes nothing (not even update_time)."""
        _check_draft(draft)
        digest = draft.content_hash()
        async with self._engine.connect() as conn:
            current = await store.get(conn, tenant, draft.memory_id)
        if current is not None and not current.expired(self._clock()) and current.content_hash == digest:
            return current
        [vector] = await self._embedder.embed([draft.text])
        if _is_zero(vector):
            raise InvalidArgument(
                "memory text has nothing to embed", violations=[("memory.text", "has no words")]
            )
        try:
            return await self._write(tenant, draft, digest, vector)
        except IntegrityError:
            # A concurrent put created the same id first; write again over it.
            return await self._write(tenant, draft, digest, vector)

    async def _write(self, tenant: str, draft: MemoryDraft, digest: str, vector: list[float]) -> MemoryRecord:
        now = self._clock()
        async with self._engine.begin() as conn:
            current = await store.get(conn, tenant, draft.memory_id, for_update=True)
            live = current is not None and not current.expired(now)
            if current is not None and live and current.content_hash == digest:
                return current
            record = MemoryRecord(
                tenant=tenant,
                memory_id=draft.memory_id,
                subject=draft.subject,
                namespace=draft.namespace,
                text=draft.text,
                labels=dict(draft.labels),
                metadata=dict(draft.metadata),
                content_hash=digest,
                create_time=current.create_time if current is not None and live else now,
                update_time=now,
                expire_time=now + timedelta(seconds=draft.ttl_seconds) if draft.ttl_seconds else None,
            )
            if current is None:
                await store.insert_record(conn, record)
            else:
                await store.replace_record(conn, record)
            await self._vectors.upsert(record, vector)
        return record

    async def get(self, tenant: str, memory_id: str) -> MemoryRecord:
        """A live memory; NotFound when missing or expired."""
        async with self._engine.connect() as conn:
            record = await store.get(conn, tenant, memory_id)
        if record is None or record.expired(self._clock()):
            raise NotFound(
                f"memory memories/{memory_id} not found", metadata={"name": f"memories/{memory_id}"}
            )
        return record

    async def query(
        self,
        tenant: str,
        text: str,
        *,
        top_k: int = 0,
        subject: str = "",
        namespace: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> list[ScoredMemory]:
        """The live memories nearest in meaning to `text`, best first (top_k: 0 = 5, at most 100)."""
        if not text.strip():
            raise InvalidArgument("text is required", violations=[("text", "required")])
        if top_k < 0:
            raise InvalidArgument("top_k must not be negative", violations=[("top_k", "negative")])
        limit = min(top_k or DEFAULT_TOP_K, MAX_TOP_K)
        [vector] = await self._embedder.embed([text])
        if _is_zero(vector):
            return []
        now = self._clock()
        hits = await self._vectors.search(
            tenant, vector, now=now, limit=limit, subject=subject, namespace=namespace, labels=labels
        )
        async with self._engine.connect() as conn:
            records = await store.get_many(conn, tenant, [memory_id for memory_id, _ in hits])
        return [
            ScoredMemory(records[memory_id], score)
            for memory_id, score in hits
            if memory_id in records and not records[memory_id].expired(now)
        ]

    async def erase(self, tenant: str, subject: str) -> int:
        """Erase every memory of `subject` (records and vectors); returns how many records went."""
        if not subject:
            raise InvalidArgument("subject is required", violations=[("subject", "required")])
        async with self._engine.begin() as conn:
            erased = await store.delete_subject(conn, tenant, subject)
            await self._vectors.delete_subject(tenant, subject)
        return erased

    async def sweep_expired(self, batch: int = 500) -> int:
        """Delete memories whose time to live ran out; returns how many."""
        total = 0
        while True:
            async with self._engine.begin() as conn:
                keys = await store.expired_keys(conn, self._clock(), batch)
                by_tenant: dict[str, list[str]] = {}
                for tenant, memory_id in keys:
                    by_tenant.setdefault(tenant, []).append(memory_id)
                for tenant, memory_ids in by_tenant.items():
                    total += await store.delete_keys(conn, tenant, memory_ids)
                    await self._vectors.delete_memories(tenant, memory_ids)
            if len(keys) < batch:
                return total

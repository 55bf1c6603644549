"""Memory vectors in Qdrant: one `memories` collection, cosine distance, one point per (tenant, memory).

Local mode (`path=`, embedded, one process per folder) by default; a Qdrant server when given `url=`.
Each point's payload carries what queries filter on: tenant, memory_id, subject, namespace, labels (also as
`label_pairs`, JSON `[key, value]` strings, so label keys of any spelling filter exactly) and `expire_at`
(epoch milliseconds, 0 for never).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from qdrant_client import AsyncQdrantClient, models

from agentflow_memory.records import MemoryRecord

COLLECTION = "memories"
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://agentflow.dev/memory")


def point_id(tenant: str, memory_id: str) -> str:
    """The Qdrant point id of a memory: uuid5 of (tenant, memory_id)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, json.dumps([tenant, memory_id])))


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _label_pair(key: str, value: str) -> str:
    return json.dumps([key, value], ensure_ascii=False)


def _match(key: str, value: str | int) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


class VectorIndex:
    """The memory collection of one Qdrant instance."""

    def __init__(self, client: AsyncQdrantClient, collection: str = COLLECTION) -> None:
        self._client = client
        self._collection = collection

    @classmethod
    def open(cls, *, path: Path | None = None, url: str | None = None) -> VectorIndex:
        """A local (embedded) index in folder `path`, or a Qdrant server at `url`."""
        if url:
            return cls(AsyncQdrantClient(url=url))
        if path is None:
            raise ValueError("give a local path or a server url")
        path.mkdir(parents=True, exist_ok=True)
        return cls(AsyncQdrantClient(path=str(path)))

    async def ensure_collection(self, dimension: int) -> None:
        """Create the collection (cosine, `dimension`) if missing."""
        if not await self._client.collection_exists(self._collection):
            await self._client.create_collection(
                self._collection,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
            )

    async def upsert(self, record: MemoryRecord, vector: Sequence[float]) -> None:
        """Store or replace the vector and payload of one memory."""
        payload = {
            "tenant": record.tenant,
            "memory_id": record.memory_id,
            "subject": record.subject,
            "namespace": record.namespace,
            "labels": record.labels,
            "label_pairs": [_label_pair(k, v) for k, v in record.labels.items()],
            "expire_at": _epoch_ms(record.expire_time) if record.expire_time else 0,
        }
        point = models.PointStruct(
            id=point_id(record.tenant, record.memory_id), vector=list(vector), payload=payload
        )
        await self._client.upsert(self._collection, points=[point], wait=True)

    async def search(
        self,
        tenant: str,
        vector: Sequence[float],
        *,
        now: datetime,
        limit: int,
        subject: str = "",
        namespace: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> list[tuple[str, float]]:
        """(memory_id, cosine score) of the nearest live memories of `tenant` passing the filters."""
        must: list[models.Condition] = [_match("tenant", tenant)]
        if subject:
            must.append(_match("subject", subject))
        if namespace:
            must.append(_match("namespace", namespace))
        must.extend(_match("label_pairs", _label_pair(k, v)) for k, v in (labels or {}).items())
        live = models.Filter(
            should=[
                _match("expire_at", 0),
                models.FieldCondition(key="expire_at", range=models.Range(gt=_epoch_ms(now))),
            ]
        )
        must.append(live)
        response = await self._client.query_points(
            self._collection, query=list(vector), query_filter=models.Filter(must=must), limit=limit
        )
        return [(str((p.payload or {})["memory_id"]), float(p.score)) for p in response.points]

    async def delete_memories(self, tenant: str, memory_ids: Sequence[str]) -> None:
        """Delete the vectors of the given memories."""
        if memory_ids:
            ids: list[models.ExtendedPointId] = [point_id(tenant, m) for m in memory_ids]
            await self._client.delete(
                self._collection, points_selector=models.PointIdsList(points=ids), wait=True
            )

    async def delete_subject(self, tenant: str, subject: str) -> None:
        """Delete every vector of a subject."""
        selector = models.FilterSelector(
            filter=models.Filter(must=[_match("tenant", tenant), _match("subject", subject)])
        )
        await self._client.delete(self._collection, points_selector=selector, wait=True)

    async def count(self, tenant: str) -> int:
        """How many vectors a tenant has."""
        result = await self._client.count(
            self._collection, count_filter=models.Filter(must=[_match("tenant", tenant)]), exact=True
        )
        return int(result.count)

    async def close(self) -> None:
        """Release the client (and the local folder's lock)."""
        await self._client.close()
